import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { initialTransition, type AnyMachineSnapshot } from 'xstate';
import { createStepper } from './transition.ts';
import { readLuaScript } from './lua/read-script.ts';
import { metrics } from '../ops/metrics.ts';
import type { Command, CommandBatch } from '../../machines/commands.ts';
import { conversationMachine, type ConversationContext, type ConversationEvent, type ConversationInput } from '../../machines/conversation.ts';
import { CiphertextMessageType, DecryptionErrorMessage, PlaintextContent } from '@signalapp/libsignal-client';
import { ConversationCrypto } from '../signal/conversation-crypto.ts';
import type { BusinessPreKeys } from '../signal/business-prekeys.ts';
import { identityChangedValue, inboundMessageValue, statusError, statusValue, type ChangeValue, type StatusInput } from '../webhook/envelope.ts';
import { classifySignalError } from '../signal/classify.ts';
import { decodeContent, encodeContent } from '../signal/content.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Keys } from '../store/keys.ts';
import { open, openBinary, seal, sealBinary, type DataKeys } from '../store/sealer.ts';
import type { MailboxEvent } from './mailbox.ts';
import { isInboundMessageId } from './ids.ts';
import { AttachmentTooLargeError, TransportUnavailableError, UnknownAddressError, type OutgoingEnvelope, type TransportClient } from './transport-client.ts';
import type { TraceLine } from '../trace/format.ts';
import type { Stores } from '../store/stores.ts';
import { SERVICE_WINDOW_MS } from './ports.ts';
import { decodeSnapshot, encodeSnapshot } from './snapshot-codec.ts';
import { decryptAttachment, type AttachmentPointer } from '../media/attachment.ts';
import { MediaQuotaError, type MediaStore } from '../media/store.ts';
import { ATTACHMENT_OVERHEAD_BYTES, checkInboundMedia, inboundMaxBytes, storedMimeType, type MediaRefusal } from '../media/limits.ts';
import { snapshotBefore } from '../trace/replay.ts';
import { encodeTraceChunk, readTraceLines } from '../trace/store.ts';

const COMMIT_LUA = readLuaScript('commit.lua');
const RENEW_LUA = readLuaScript('renew-1.lua');
const RELEASE_LUA = readLuaScript('release-3.lua');

/** A status change for the business, as the host hands it to the webhook layer. */
export type StatusUpdate = StatusInput;

/** Where the host sends what leaves the conversation besides the transport. */
export interface HostSinks {
  /** Queues webhook updates (statuses, messages), in order, behind the business's earlier ones. */
  webhook(businessId: string, phoneNumberId: string, values: ChangeValue[]): Promise<void>;
  /** Schedules a durable timer that posts `event` to the conversation's mailbox at `at`. */
  timer(conversationId: string, timerId: string, at: number, event: MailboxEvent): Promise<void>;
  /** Cancels a timer that is no longer needed (a timer already fired or gone is fine). */
  cancelTimer(conversationId: string, timerId: string): Promise<void>;
  /** Adds to the business's aggregate counters (statistics and billing; no user identifiers). */
  count(businessId: string, fields: Record<string, number>): Promise<void>;
  /** Makes sure a deletion job wakes the conversation when a message's retention ends at `until`. */
  purgeAt(conversationId: string, until: number, retentionMs: number): Promise<void>;
  /** Removes the deletion jobs of a deleted conversation. */
  cancelPurges(conversationId: string, untils: number[], retentionMs: number): Promise<void>;
}

/** Settings of the actor host. */
export interface HostOptions {
  retentionMs: number;
  bundleRetryMs: number;
  retransmitBaseMs: number;
  retransmitMaxMs: number;
  leaseMs?: number;
  batchSize?: number;
  /** The trace's bound, in steps (each step: an event and the results of its local commands, ~3 lines). */
  traceMax?: number;
  /** Upper bound of one drain, so one busy conversation cannot hold a worker slot forever. */
  maxStepsPerDrain?: number;
}

/** Another process holds the conversation's lease; the wake job should be retried. */
export class LeaseBusyError extends Error {
  constructor(readonly conversationId: string) {
    super('conversation lease held by another worker');
    this.name = 'LeaseBusyError';
  }
}

/** The lease was lost or the snapshot changed under us: nothing was committed; the job is retried. */
export class CommitConflictError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'CommitConflictError';
  }
}

interface Meta {
  businessId: string;
  phoneNumberId: string;
  waId: string;
  display: string;
}

type TimerCommand = Extract<Command, { type: 'timer.schedule' | 'timer.cancel' }>;

interface RowOp {
  wamid: string;
  set?: Record<string, string>;
  del?: string[];
  drop?: boolean;
}

/** The state of one conversation while a worker runs it. */
interface Loaded {
  id: string;
  /** The conversation's store. */
  redis: Redis;
  meta: Meta;
  dk: Buffer;
  snapshot: AnyMachineSnapshot;
  version: string;
  traceSeq: number;
  crypto: ConversationCrypto;
  outbox: Command[];
  /** Ciphertexts made in this drain, so a send needs no read-back. */
  ciphertexts: Map<string, { type: number; body: string }>;
  /** Envelope bodies of this drain's ENVELOPE events, kept out of the machine and the trace. */
  envelopes: Map<string, { messageType: number; body: string }>;
  /** Inbound messages decrypted in this drain, until stored and forwarded. */
  inbound: Map<string, InboundRow>;
  /** Prekey consumption to apply after the next commit (PreKey messages from the user). */
  afterCommit: (() => Promise<void>)[];
  /** The business's retention, fixed for this drain. */
  retentionMs: number;
  /** Set once the conversation was deleted (its retention ended). */
  deleted: boolean;
  /**
   * Timer commands executed in this drain but not yet applied to the timers queue, netted (a timer scheduled
   * and cancelled within the drain never reaches BullMQ). Applied when the drain ends; until then every
   * commit keeps them in the outbox, so a crash replays them.
   */
  timerOps: TimerCommand[];
}

/** A conversation's keys as read at the start of a drain. */
interface StoredState {
  metaRow: Record<string, string>;
  snapRow: Buffer | Record<string, string> | null;
  sess: Buffer | null;
  outbox: string[];
}

/** An inbound message as stored (sealed) and forwarded to the business. */
interface InboundRow {
  message: Record<string, unknown> & { type: string };
  timestamp: string;
  profileName?: string;
}

/** A status command as the outbox may keep it: with its message row's fields when the row goes in the same step. */
type StatusCommand = Extract<Command, { type: 'webhook.status' }> & { row?: { bo?: string; k?: string; at?: string } };

const commandsOf = (actions: { type: string; params?: unknown }[]): Command[] =>
  actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list);

/**
 * The actor host: hydrates a conversation from Redis, runs its mailbox through the pure machine one event at
 * a time, executes the commands, and commits snapshot + Signal session + message rows + trace atomically
 * under a fenced single-writer lease. Nothing stays in memory between drains.
 */
export class ActorHost {
  /**
   * For recording traces (test/traces/record.spec.ts): receives each committed step's trace lines, also those
   * of the step that deleted the conversation and its stored trace with it. Unset in production.
   */
  static traceTap: ((conversationId: string, lines: string[]) => void) | undefined;

  private readonly leaseMs: number;
  private readonly batchSize: number;
  private readonly traceMax: number;
  private readonly maxSteps: number;
  private readonly transition = createStepper();

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    private readonly businesses: BusinessStore,
    private readonly transport: TransportClient,
    private readonly sinks: HostSinks,
    private readonly log: Logger,
    private readonly opts: HostOptions,
    /** The business number's prekeys, for PreKey messages users send first. */
    private readonly preKeysOf?: (phoneNumberId: string) => Promise<BusinessPreKeys>,
  ) {
    this.leaseMs = opts.leaseMs ?? 15_000;
    this.batchSize = opts.batchSize ?? 64;
    this.traceMax = opts.traceMax ?? 300;
    this.maxSteps = opts.maxStepsPerDrain ?? 50;

  }

  /**
   * The TTL backstop of a conversation's keys: its business's retention and a day. Deletion jobs remove data
   * when retention ends; the TTL catches whatever they miss, and must never end before them (a process
   * default shorter than the business's retention would lose a message still being retransmitted).
   */
  private keyTtlMs(c: Loaded): number {
    return c.retentionMs + 86_400_000;
  }

  /** Runs everything waiting in the conversation's mailbox. Returns the number of events handled. */
  async drain(conversationId: string): Promise<number> {
    return (await this.drainAndCheck(conversationId)).handled;
  }

  /**
   * Drains the conversation's mailbox under its lease; `pending` tells whether events arrived meanwhile (the
   * worker then wakes the conversation again).
   */
  async drainAndCheck(conversationId: string): Promise<{ handled: number; pending: boolean }> {
    const token = randomUUID();
    const leaseKey = this.keys.lease(conversationId);
    const mailboxKey = this.keys.mailbox(conversationId);
    // The conversation's store: the shared one, or its business's region's.
    const redis = await this.stores.forConversation(conversationId);
    // The lease and the reads go out together (one round trip: same connection, same hash slot, executed in
    // order), so the reads see what was there once the lease was taken; without the lease they are dropped.
    const started = performance.now();
    const [lease, read, batch] = await Promise.allSettled([
      redis.set(leaseKey, token, 'PX', this.leaseMs, 'NX'),
      this.readState(redis, conversationId),
      redis.lrange(mailboxKey, 0, this.batchSize - 1),
    ]);
    if (lease.status === 'rejected') throw lease.reason;
    if (!lease.value) throw new LeaseBusyError(conversationId);
    if (read.status === 'rejected' || batch.status === 'rejected') {
      // Taken but unusable: give the lease back at once rather than leave it to expire.
      await redis.eval(RELEASE_LUA, 3, leaseKey, this.keys.outbox(conversationId), mailboxKey, token, '').catch(() => undefined);
      throw read.status === 'rejected' ? read.reason : (batch as PromiseRejectedResult).reason;
    }
    const state = read.value;
    const firstBatch = batch.value;
    // Keep the lease while a step waits on the network; a process that stalls longer loses it (fencing).
    const renew = setInterval(() => {
      redis.eval(RENEW_LUA, 1, leaseKey, token, String(this.leaseMs)).catch(() => undefined);
    }, Math.max(1000, Math.floor(this.leaseMs / 3)));
    let handled = 0;
    // Set once every effect the outbox held has been applied: the release then clears it (a crash before
    // that replays it, which is safe: effects are idempotent).
    let outboxDone = false;
    let waiting = 0;
    try {
      handled = await this.run(redis, conversationId, token, state, firstBatch);
      outboxDone = true;
      metrics.drainSeconds.observe((performance.now() - started) / 1000);
    } finally {
      clearInterval(renew);
      waiting = Number(await redis.eval(RELEASE_LUA, 3, leaseKey, this.keys.outbox(conversationId), mailboxKey, token, outboxDone ? '1' : ''));
    }
    return { handled, pending: waiting > 0 };
  }

  /** The drain's body, under the lease: hydrate, replay the outbox, then steps until the mailbox is empty. */
  private async run(redis: Redis, conversationId: string, token: string, state: StoredState, firstBatch: string[]): Promise<number> {
    const mailboxKey = this.keys.mailbox(conversationId);
    const loaded = await this.load(redis, conversationId, state);
    if (!loaded) {
      // No such conversation (deleted, or an event for an id we never made): drop what waits for it.
      await redis.del(mailboxKey);
      return 0;
    }
    metrics.hydrations.inc();
    let handled = 0;
    let pending: ConversationEvent[] = [];
    let batch: string[] | null = firstBatch;
    if (loaded.outbox.length) {
      pending = await this.executeEffects(loaded, loaded.outbox, token);
      batch = null; // effects went over the network meanwhile: read the mailbox afresh
    }
    for (let step = 0; step < this.maxSteps; step++) {
      const raw = batch ?? (await redis.lrange(mailboxKey, 0, this.batchSize - 1));
      batch = null;
      const fromMailbox = raw.map((r) => this.toMachineEvent(loaded, JSON.parse(r) as MailboxEvent));
      // Retention ticks go last: they are timers, and a message arriving in the same batch keeps the
      // conversation alive instead of being lost with it.
      const events = [...pending, ...fromMailbox.filter((e) => e.type !== 'PURGE_DUE'), ...fromMailbox.filter((e) => e.type === 'PURGE_DUE')];
      pending = [];
      if (!events.length) break;
      const effects = await this.step(loaded, events, raw.length, token);
      handled += events.length;
      pending = await this.executeEffects(loaded, effects, token);
      if (loaded.deleted) break;
    }
    if (pending.length && !loaded.deleted) {
      // Out of steps with results still to record: commit them so the outbox is not replayed needlessly.
      const effects = await this.step(loaded, pending, 0, token);
      await this.executeEffects(loaded, effects, token);
    }
    await this.applyTimers(loaded);
    return handled;
  }

  private inputOf(conversationId: string, retentionMs: number): ConversationInput {
    return {
      conversationId,
      retryBaseMs: this.opts.bundleRetryMs,
      retransmitBaseMs: this.opts.retransmitBaseMs,
      retransmitMaxMs: this.opts.retransmitMaxMs,
      ttlMs: retentionMs,
      retentionMs,
    };
  }

  /** The business's retention (its own setting, else the default; never more than 30 days). */
  private async retentionOf(businessId: string): Promise<number> {
    return this.businesses.retentionMs(businessId, this.opts.retentionMs);
  }

  /** Reads a conversation's stored state (issued together with the lease, see {@link drainAndCheck}). */
  private async readState(redis: Redis, id: string): Promise<StoredState> {
    const [metaRow, snapRow, sess, outbox] = await Promise.all([
      redis.hgetall(this.keys.meta(id)),
      readStoredSnapshot(redis, this.keys.snapshot(id)),
      redis.getBuffer(this.keys.session(id)),
      redis.lrange(this.keys.outbox(id), 0, -1),
    ]);
    return { metaRow, snapRow, sess, outbox };
  }

  private async load(redis: Redis, id: string, state: StoredState): Promise<Loaded | null> {
    const { metaRow, snapRow, sess, outbox } = state;
    if (!metaRow.business_id || !metaRow.phone_number_id || !metaRow.wa) return null;
    const dk = await this.dataKeys.get(metaRow.business_id);
    const waId = open(dk, metaRow.wa, `${this.keys.meta(id)}:wa`).toString();
    const pn = await this.businesses.phoneNumber(metaRow.phone_number_id);
    if (!pn) return null;
    const meta: Meta = { businessId: metaRow.business_id, phoneNumberId: metaRow.phone_number_id, waId, display: pn.display_phone_number };
    const retentionMs = await this.retentionOf(meta.businessId);
    let snapshot: AnyMachineSnapshot;
    if (snapRow) {
      const aad = `${this.keys.snapshot(id)}:s`;
      const persisted = Buffer.isBuffer(snapRow) ? decodeSnapshot(dk, id, snapRow, aad) : JSON.parse(open(dk, snapRow.s!, aad).toString());
      snapshot = conversationMachine.resolveState(persisted as never) as AnyMachineSnapshot;
    } else {
      [snapshot] = initialTransition(conversationMachine, this.inputOf(id, retentionMs)) as unknown as [AnyMachineSnapshot];
    }
    let keys = { session: null as Uint8Array | null, remoteIdentity: null as Uint8Array | null };
    if (sess) keys = decodeSession(openBinary(dk, sess, `${this.keys.session(id)}:s`));
    const identity = await this.businesses.identity(meta.phoneNumberId);
    return {
      id,
      redis,
      meta,
      dk,
      snapshot,
      version: metaRow.v ?? (snapRow && !Buffer.isBuffer(snapRow) ? snapRow.v : undefined) ?? '0',
      retentionMs,
      deleted: false,
      traceSeq: Number(metaRow.t ?? (snapRow && !Buffer.isBuffer(snapRow) ? snapRow.t : undefined) ?? 0),
      crypto: new ConversationCrypto(identity, meta.display, waId, keys),
      outbox: outbox.map((o) => JSON.parse(o) as Command),
      ciphertexts: new Map(),
      envelopes: new Map(),
      inbound: new Map(),
      afterCommit: [],
      timerOps: [],
    };
  }

  private toMachineEvent(c: Loaded, e: MailboxEvent): ConversationEvent {
    if (e.type === 'ENVELOPE') {
      c.envelopes.set(e.id, { messageType: e.messageType, body: e.body });
      return { type: 'ENVELOPE', id: e.id, at: e.at, messageType: e.messageType };
    }
    return e;
  }

  /**
   * Runs events through the machine (local commands such as encrypt are executed at once and their results
   * fed back), then commits. Returns the effects to execute after the commit.
   */
  private async step(c: Loaded, events: ConversationEvent[], mailboxCount: number, token: string): Promise<Command[]> {
    const queue = [...events];
    const effects: Command[] = [];
    const rowOps = new Map<string, RowOp>();
    const traceLines: string[] = [];
    // The step's lines as made (pruning may move them into a rewritten trace), for the trace tap.
    const tapLines: string[] = [];
    const rowOp = (wamid: string) => {
      let op = rowOps.get(wamid);
      if (!op) rowOps.set(wamid, (op = { wamid }));
      return op;
    };
    const metaSet: Record<string, string> = {};
    const indexes: string[] = [];
    const retained: [number, string][] = [];
    const purged: string[] = [];
    let traceReset: string[] | null = null;
    let deleteAll = false;
    const pendingPurges: number[] = [];
    let eraseWindow = false;
    const untilBefore = (c.snapshot.context as ConversationContext).retentionUntil;
    const seqBefore = c.traceSeq;
    while (queue.length) {
      const event = queue.shift()!;
      const [next, actions] = this.transition(c.snapshot, event);
      c.snapshot = next;
      const commands = commandsOf(actions);
      c.traceSeq += 1;
      const line: TraceLine = {
        conversation_id: c.id,
        seq: c.traceSeq,
        at: event.at,
        event,
        state: next.value as string,
        commands,
        ...(c.traceSeq === 1 ? { input: this.inputOf(c.id, c.retentionMs) } : {}),
      };
      traceLines.push(JSON.stringify(line));
      if (ActorHost.traceTap) tapLines.push(traceLines.at(-1)!);
      const results: ConversationEvent[] = [];
      for (const cmd of commands) {
        switch (cmd.type) {
          case 'bundle.fetch':
            results.push(await this.fetchBundle(c, event.at));
            break;
          case 'message.encrypt':
            results.push(await this.encrypt(c, cmd, event.at, rowOp(cmd.wamid)));
            break;
          case 'inbound.store': {
            const row = c.inbound.get(cmd.id);
            if (!row) break;
            const rowKey = this.keys.message(c.id, cmd.id);
            rowOp(cmd.id).set = { c: seal(c.dk, JSON.stringify(row), `${rowKey}:c`), in: '1', at: String(cmd.at) };
            metaSet.li = String(cmd.at);
            indexes.push(cmd.id);
            retained.push([cmd.at + c.retentionMs, cmd.id]);
            break;
          }
          case 'store.purge': {
            // A message still owed (its failure not yet reported) keeps its row until that is done; the
            // sweeper wakes the conversation again afterwards.
            const owed = new Set((c.snapshot.context as ConversationContext).messages.map((m) => m.wamid));
            for (const id of await c.redis.zrangebyscore(this.keys.retention(c.id), '-inf', String(cmd.upTo))) {
              if (owed.has(id)) continue;
              rowOp(id).drop = true;
              purged.push(id);
            }
            traceReset = await this.prunedTrace(c, cmd.upTo - c.retentionMs, purged, traceLines);
            break;
          }
          case 'conversation.delete': {
            if (cmd.erase) eraseWindow = true;
            const entries = await c.redis.zrange(this.keys.retention(c.id), '0', '-1', 'WITHSCORES');
            for (let i = 0; i < entries.length; i += 2) {
              rowOp(entries[i]!).drop = true;
              pendingPurges.push(Number(entries[i + 1]));
            }
            const until = (c.snapshot.context as ConversationContext).retentionUntil;
            if (until) pendingPurges.push(until);
            deleteAll = true;
            break;
          }
          case 'envelope.decrypt':
            results.push(await this.decrypt(c, cmd.id, event.at));
            break;
          case 'session.archive':
            c.crypto.archive();
            break;
          case 'message.forget': {
            const op = rowOp(cmd.wamid);
            op.del = ['c', 'ct', 'ty'];
            c.ciphertexts.delete(cmd.wamid);
            break;
          }
          default:
            effects.push(cmd);
        }
      }
      // Results of local commands are the next events, ahead of the rest of the batch.
      queue.unshift(...results);
    }
    // The bound: once the stored trace holds half its bound in entries, its older half goes, the new first
    // line carrying the snapshot before it, so what is kept still replays from its start (commit.lua's
    // LTRIM at the full bound is only a backstop). Checked every few steps: one LLEN.
    const every = Math.max(1, Math.floor(this.traceMax / 8));
    if (!traceReset && !deleteAll && Math.floor(c.traceSeq / every) !== Math.floor(seqBefore / every)) {
      if ((await c.redis.llen(this.keys.trace(c.id))) + 1 >= Math.max(2, Math.floor(this.traceMax / 2))) traceReset = await this.halvedTrace(c, traceLines);
    }
    await this.keepRowsForStatuses(c, effects, rowOps, deleteAll);
    if (deleteAll) {
      await this.commit(c, token, mailboxCount, effects, [], [...rowOps.values()], {}, { deleteAll: true });
      ActorHost.traceTap?.(c.id, tapLines);
      c.deleted = true;
      await this.afterDelete(c, [...rowOps.keys()]);
      // An erase takes the open service window with it; a retention end leaves it to its own 24 hours.
      if (eraseWindow) await c.redis.del(this.keys.window(c.id));
      await this.sinks.cancelPurges(c.id, pendingPurges, c.retentionMs);
      return effects;
    }
    await this.commit(c, token, mailboxCount, effects, traceLines, [...rowOps.values()], metaSet, { retained, purged, traceReset });
    ActorHost.traceTap?.(c.id, tapLines);
    for (const f of c.afterCommit.splice(0)) await f();
    // Index entries live in other slots than the conversation (one per message id): written key by key.
    if (purged.length) await Promise.all(purged.map((id) => c.redis.del(this.keys.messageIndex(id))));
    const untilAfter = (c.snapshot.context as ConversationContext).retentionUntil;
    if (untilAfter !== null && untilAfter !== untilBefore) {
      // The sweeper's index, and the deletion job for the newest message's retention end.
      await c.redis.zadd(this.keys.expiries, 'GT', untilAfter, c.id);
    }
    for (const [until] of retained) await this.sinks.purgeAt(c.id, until, c.retentionMs);
    if (metaSet.li) await c.redis.set(this.keys.window(c.id), metaSet.li, 'PX', SERVICE_WINDOW_MS);
    if (indexes.length) {
      // Inbound ids → conversation, so mark-as-read finds it; written after the commit (another slot).
      // NX: the first conversation to store an id keeps it (two devices racing with one id cannot move it).
      await Promise.all(indexes.map((id) => c.redis.set(this.keys.messageIndex(id), JSON.stringify({ c: c.id, b: c.meta.businessId }), 'PX', this.keyTtlMs(c), 'NX')));
    }
    return effects;
  }

  /**
   * A status whose message row this very step deletes (its TTL and its retention ended together: at day 30 by
   * default) takes what it reports from the row with it, read before the commit: the callback data (still
   * sealed, bound to the row's key), the kind and the accept time travel in the outbox, so the failed status
   * carries them even when the effects run after the row is gone, or again after a crash.
   */
  private async keepRowsForStatuses(c: Loaded, effects: Command[], rowOps: Map<string, RowOp>, deleteAll: boolean): Promise<void> {
    for (const [i, e] of effects.entries()) {
      if (e.type !== 'webhook.status' || !(deleteAll || rowOps.get(e.wamid)?.drop)) continue;
      const [bo, k, at] = await c.redis.hmget(this.keys.message(c.id, e.wamid), 'bo', 'k', 'at');
      const kept: StatusCommand = { ...e, row: { ...(bo ? { bo } : {}), ...(k ? { k } : {}), ...(at ? { at } : {}) } };
      effects[i] = kept;
    }
  }

  private async fetchBundle(c: Loaded, at: number): Promise<ConversationEvent> {
    try {
      const bundle = await this.transport.fetchBundle(c.meta.waId);
      const { identityChanged } = await c.crypto.processBundle(bundle, new Date(at));
      return { type: 'BUNDLE_FETCHED', at, ...(identityChanged ? { identityChanged } : {}) };
    } catch (e) {
      if (e instanceof UnknownAddressError) return { type: 'BUNDLE_FAILED', at, reason: 'unknown_recipient' };
      if (e instanceof TransportUnavailableError) return { type: 'BUNDLE_FAILED', at, reason: 'unavailable' };
      this.log.warn({ conversation_id: c.id, failure: classifySignalError(e), err: (e as Error).message }, 'bundle rejected');
      return { type: 'BUNDLE_FAILED', at, reason: 'bad_bundle' };
    }
  }

  private async encrypt(c: Loaded, cmd: Extract<Command, { type: 'message.encrypt' }>, at: number, op: RowOp): Promise<ConversationEvent> {
    const { wamid, seq } = cmd;
    let plaintext: Uint8Array;
    if (cmd.skip) {
      plaintext = encodeContent({ v: 1, kind: 'skip', seq });
    } else if (cmd.read) {
      plaintext = encodeContent({ v: 1, kind: 'receipt', status: 'read', ids: cmd.read });
    } else {
      const rowKey = this.keys.message(c.id, wamid);
      const sealed = await c.redis.hget(rowKey, 'c');
      if (!sealed) return { type: 'ENCRYPT_FAILED', wamid, at, reason: 'message_missing' };
      const stored = JSON.parse(open(c.dk, sealed, `${rowKey}:c`).toString()) as { message: Record<string, unknown> & { type: string }; ts: string };
      plaintext = encodeContent({ v: 1, kind: 'message', id: wamid, seq, from: c.meta.display, timestamp: stored.ts, message: stored.message });
    }
    try {
      const ct = await c.crypto.encrypt(plaintext, new Date(at));
      const body = Buffer.from(ct.body).toString('base64');
      c.ciphertexts.set(wamid, { type: ct.type, body });
      op.set = { ...op.set, ct: body, ty: String(ct.type) };
      return { type: 'ENCRYPTED', wamid, at, messageType: ct.type };
    } catch (e) {
      const reason = classifySignalError(e);
      if (reason === 'no_session' || reason === 'untrusted_identity') c.crypto.archive();
      return { type: 'ENCRYPT_FAILED', wamid, at, reason };
    }
  }

  /** Where received media go (sealed, with the business's retention); without it they are not carried. */
  private media?: MediaStore;
  useMedia(media: MediaStore): void {
    this.media = media;
  }

  /**
   * A user's file arrives as an attachment pointer: its declared type and size are checked against the Cloud
   * API's limits before anything is fetched; the ciphertext is fetched from the transport (no more than the
   * limit allows), checked and decrypted with the key the message carried, its real size checked, and stored
   * as the business's media within its quota; the business gets the Cloud API's `{id, mime_type, sha256,
   * caption}`. A refused file is not kept: a type that is not supported arrives as an `unsupported` message
   * with error 131051; a file too large, over the quota, or that cannot be fetched or opened, with 131052.
   */
  private async receiveAttachments<M extends Record<string, unknown> & { type: string }>(c: Loaded, message: M): Promise<M> {
    const kind = message.type;
    const part = message[kind] as { attachment?: AttachmentPointer } | undefined;
    if (!part?.attachment) return message;
    const { attachment, ...rest } = part;
    const mimeType = storedMimeType(String(attachment.mime_type ?? ''));
    const refuse = (r: MediaRefusal): M => {
      this.log.info({ conversation_id: c.id, code: r.code, details: r.details }, 'inbound media refused');
      // The Cloud API delivers a type it does not support without its content: only the error (and a reply's context).
      if (r.code === 131051) return { ...(message.context ? { context: message.context } : {}), type: 'unsupported', errors: [statusError(131051, r.details)] } as unknown as M;
      return { ...message, [kind]: { ...rest, mime_type: mimeType }, errors: [statusError(131052, r.details)] };
    };
    const declared = checkInboundMedia(kind, mimeType, typeof attachment.file_size === 'number' ? attachment.file_size : undefined);
    if (declared) return refuse(declared);
    const max = inboundMaxBytes(kind, mimeType)!;
    try {
      if (!this.media) throw new Error('media are not carried by this worker');
      const ciphertext = await this.transport.downloadAttachment(attachment.pointer, max + ATTACHMENT_OVERHEAD_BYTES);
      if (!ciphertext) throw new Error('the transport has no such attachment');
      const bytes = decryptAttachment(attachment, ciphertext);
      // The pointer's size is the sender's word: the file itself decides.
      const actual = checkInboundMedia(kind, mimeType, bytes.length);
      if (actual) return refuse(actual);
      const sha256 = createHash('sha256').update(bytes).digest('base64');
      if (sha256 !== attachment.sha256) throw new Error('attachment hash mismatch');
      const filename = typeof (rest as { filename?: unknown }).filename === 'string' ? (rest as { filename: string }).filename : undefined;
      const stored = await this.media.put(c.meta.businessId, c.meta.phoneNumberId, bytes, mimeType, c.retentionMs, filename);
      // Remembered with the conversation, so the file goes with it (an erase, or the end of its retention).
      await c.redis.multi().sadd(this.keys.conversationMedia(c.id), stored.id).pexpire(this.keys.conversationMedia(c.id), this.keyTtlMs(c)).exec();
      return { ...message, [kind]: { ...rest, id: stored.id, mime_type: mimeType, sha256 } };
    } catch (e) {
      if (e instanceof AttachmentTooLargeError) return refuse({ code: 131052, details: `${kind} files are at most ${max} bytes; this one has more` });
      if (e instanceof MediaQuotaError) return refuse({ code: 131052, details: e.message });
      this.log.warn({ conversation_id: c.id, err: (e as Error).message }, 'inbound media could not be received');
      return { ...message, [kind]: { ...rest, mime_type: mimeType }, errors: [statusError(131052)] };
    }
  }

  private async decrypt(c: Loaded, id: string, at: number): Promise<ConversationEvent> {
    const env = c.envelopes.get(id);
    if (!env) return { type: 'DECRYPT_FAILED', id, at, reason: 'envelope_missing' };
    if (env.messageType === CiphertextMessageType.Plaintext) {
      // A retry request: the device could not decrypt message `id`; it is not encrypted (PlaintextContent).
      try {
        const dem = DecryptionErrorMessage.extractFromSerializedBody(PlaintextContent.deserialize(new Uint8Array(Buffer.from(env.body, 'base64'))).body());
        return { type: 'RETRY_REQUESTED', wamid: id, at, ratchetMatches: c.crypto.ratchetKeyMatches(dem.ratchetKey()) };
      } catch {
        return { type: 'DECRYPT_FAILED', id, at, reason: 'malformed' };
      }
    }
    try {
      let prekeys: ReturnType<BusinessPreKeys['stores']> | undefined;
      if (env.messageType === CiphertextMessageType.PreKey && this.preKeysOf) {
        prekeys = (await this.preKeysOf(c.meta.phoneNumberId)).stores();
        c.afterCommit.push(prekeys.commit);
      }
      const bytes = await c.crypto.decrypt({ type: env.messageType, body: Buffer.from(env.body, 'base64') }, prekeys);
      const content = decodeContent(bytes);
      if (content.kind === 'session_ack') return { type: 'SESSION_ACK', at };
      if (content.kind !== 'message') return { type: 'DECRYPT_FAILED', id, at, reason: `unsupported_${content.kind}` };
      // The id is the device's to choose: it must be the envelope's (what the transport routed and may be
      // asked about) and shaped like a user's message id, never like one Sealpost makes.
      if (content.id !== id || !isInboundMessageId(content.id)) return { type: 'DECRYPT_FAILED', id, at, reason: 'bad_message_id' };
      // The same message again (a re-encrypted copy): one webhook message, not two.
      if (c.inbound.has(content.id) || (await c.redis.exists(this.keys.message(c.id, content.id)))) {
        return { type: 'MESSAGE_DUPLICATE', id: content.id, at };
      }
      // An id another conversation's message already has (mark-as-read finds messages by id) is refused.
      const owner = await c.redis.get(this.keys.messageIndex(content.id));
      if (owner && (JSON.parse(owner) as { c?: string }).c !== c.id) return { type: 'DECRYPT_FAILED', id, at, reason: 'message_id_taken' };
      c.inbound.set(content.id, {
        message: await this.receiveAttachments(c, content.message), timestamp: content.timestamp,
        ...(content.profile_name ? { profileName: content.profile_name } : {}),
      });
      return { type: 'MESSAGE_RECEIVED', id: content.id, at, seq: content.seq, messageType: content.message.type };
    } catch (e) {
      const reason = classifySignalError(e);
      // A copy of a message already decrypted: libsignal recognises the counter.
      if (reason === 'duplicate') return { type: 'MESSAGE_DUPLICATE', id, at };
      return { type: 'DECRYPT_FAILED', id, at, reason };
    }
  }

  /**
   * The trace without its lines from before `cutoff` (they name messages whose retention ended); the new
   * first line carries the snapshot before it, so the shorter trace still replays. Null when nothing goes.
   */
  private async prunedTrace(c: Loaded, cutoff: number, purgedIds: string[], pendingLines: string[]): Promise<string[] | null> {
    const stored = await readTraceLines(c.redis, this.keys.trace(c.id), c.id);
    const raw = [...stored, ...pendingLines.splice(0)];
    const all = raw.map((l) => JSON.parse(l) as TraceLine);
    // Everything up to the last line naming a deleted message goes, and everything older than the cutoff.
    let lastMention = -1;
    raw.forEach((l, i) => {
      if (purgedIds.some((id) => l.includes(id))) lastMention = i;
    });
    const afterCutoff = all.findIndex((l) => l.at > cutoff);
    // This step's own lines always stay: the kept trace must end where the snapshot is.
    const keepFrom = Math.min(Math.max(afterCutoff < 0 ? stored.length : afterCutoff, lastMention + 1), stored.length);
    if (keepFrom === 0) {
      pendingLines.push(...raw.slice(stored.length));
      return null;
    }
    let before: unknown;
    try {
      before = snapshotBefore(all, keepFrom);
    } catch {
      // The stored trace had already lost its start (bounded length): it cannot be made replayable again.
      before = undefined;
    }
    const kept = all.slice(keepFrom).map((l, i) => (i === 0 && before !== undefined ? { ...l, before } : l));
    return kept.map((l) => JSON.stringify(l));
  }

  /**
   * The stored trace plus this step's lines, its older half dropped and the snapshot before the first kept
   * line attached to it (`before`), so the kept trace replays; null (nothing changed) when the stored trace
   * cannot be replayed from its start any more.
   */
  private async halvedTrace(c: Loaded, pendingLines: string[]): Promise<string[] | null> {
    const stored = await readTraceLines(c.redis, this.keys.trace(c.id), c.id);
    const all = [...stored, ...pendingLines].map((l) => JSON.parse(l) as TraceLine);
    const keepFrom = Math.floor(stored.length / 2);
    if (keepFrom === 0) return null;
    let before: unknown;
    try {
      before = snapshotBefore(all, keepFrom);
    } catch {
      return null;
    }
    pendingLines.splice(0);
    return all.slice(keepFrom).map((l, i) => JSON.stringify(i === 0 ? { ...l, before } : l));
  }

  /** After a conversation was deleted: its index entries and its place in the sweeper's index go too. */
  private async afterDelete(c: Loaded, messageIds: string[]): Promise<void> {
    // Files the user sent in this conversation go with it.
    const media = await c.redis.smembers(this.keys.conversationMedia(c.id));
    if (media.length && this.media) await this.media.deleteIds(c.meta.businessId, media);
    await c.redis.del(this.keys.conversationMedia(c.id));
    // Keys in several slots (the sweeper's index, the mailbox, one index entry per message): key by key.
    await Promise.all([c.redis.zrem(this.keys.expiries, c.id), c.redis.del(this.keys.mailbox(c.id)), ...messageIds.map((id) => c.redis.del(this.keys.messageIndex(id)))]);
    await this.stores.unpin(c.id);
  }

  private async commit(
    c: Loaded, token: string, pops: number, outbox: Command[], trace: string[], rows: RowOp[], metaSet: Record<string, string> = {},
    extra: { retained?: [number, string][]; purged?: string[]; traceReset?: string[] | null; deleteAll?: boolean } = {},
  ): Promise<void> {
    const snapKey = this.keys.snapshot(c.id);
    const persisted = conversationMachine.getPersistedSnapshot(c.snapshot as never);
    const sealedSnap = encodeSnapshot(c.dk, c.id, persisted, `${snapKey}:s`);
    let sealedSession: Buffer | string = '';
    if (c.crypto.dirty) sealedSession = sealBinary(c.dk, encodeSession(c.crypto.snapshot()), `${this.keys.session(c.id)}:s`);
    const rowKeys = rows.map((r) => this.keys.message(c.id, r.wamid));
    const ops: Record<string, unknown>[] = rows.map((r, i) => ({
      k: i + 1, ...(r.drop ? { drop: true } : {}), ...(r.set ? { set: r.set } : {}), ...(r.del ? { del: r.del } : {}),
    }));
    if (Object.keys(metaSet).length) ops.push({ k: 0, set: metaSet });
    const keys = [
      snapKey, this.keys.lease(c.id), this.keys.mailbox(c.id), this.keys.session(c.id),
      this.keys.outbox(c.id), this.keys.trace(c.id), this.keys.meta(c.id), this.keys.retention(c.id), ...rowKeys,
    ];
    const args = [
      token, c.version, sealedSnap, String(c.traceSeq), sealedSession, String(pops),
      JSON.stringify([...c.timerOps, ...outbox].map((o) => JSON.stringify(o))), trace.length ? encodeTraceChunk(c.id, trace) : '', String(this.traceMax),
      String(this.leaseMs), String(this.keyTtlMs(c)), JSON.stringify(ops),
      JSON.stringify(extra.retained ?? []), JSON.stringify(extra.purged ?? []),
      extra.traceReset ? (extra.traceReset.length ? encodeTraceChunk(c.id, extra.traceReset) : '-') : '',
      extra.deleteAll ? '1' : '',
    ];
    try {
      c.version = (await (c.redis as any).sealpostCommit(keys.length, ...keys, ...args)) as string;
    } catch (e) {
      const msg = (e as Error).message;
      if (msg.includes('LEASE_LOST') || msg.includes('VERSION_CONFLICT') || msg.includes('MAILBOX_MOVED')) throw new CommitConflictError(msg);
      throw e;
    }
    c.crypto.markClean();
    c.outbox = outbox;
  }

  /** Executes committed effects; returns the result events. Effects are idempotent: a replay after a crash is safe. */
  private async executeEffects(c: Loaded, effects: Command[], _token: string): Promise<ConversationEvent[]> {
    if (!effects.length) return [];
    const results: ConversationEvent[] = [];
    const now = Date.now();
    const sends: OutgoingEnvelope[] = [];
    const statuses: StatusUpdate[] = [];
    const values: ChangeValue[] = [];
    const opaque = new Map<string, string | undefined>();
    const kinds = new Map<string, string>();
    for (const cmd of effects) {
      if (cmd.type === 'transport.send') {
        const fresh = c.ciphertexts.get(cmd.wamid);
        const ct = fresh ?? (await this.readCiphertext(c, cmd.wamid));
        if (!ct) continue;
        // A ciphertext made in an earlier drain is going out again: a retransmission.
        if (!fresh) {
          metrics.retransmissions.inc();
          this.log.debug({ conversation_id: c.id, wamid: cmd.wamid }, 'retransmission');
        }
        metrics.sent.inc();
        sends.push({ id: cmd.wamid, from: c.meta.display, to: c.meta.waId, type: ct.type, body: ct.body });
      } else if (cmd.type === 'webhook.status') {
        if (!opaque.has(cmd.wamid)) {
          const { bo, kind, acceptedAt } = await this.readOpaque(c, cmd.wamid, (cmd as StatusCommand).row);
          opaque.set(cmd.wamid, bo);
          kinds.set(cmd.wamid, kind);
          if (cmd.status === 'delivered' && acceptedAt) metrics.acceptToDelivered.observe(Math.max(0, cmd.at - acceptedAt) / 1000);
        }
        metrics.statuses.inc({ status: cmd.status });
        if (cmd.status === 'failed') {
          metrics.failures.inc({ code: String(cmd.errorCode ?? 0) });
          this.log.info({ conversation_id: c.id, wamid: cmd.wamid, code: cmd.errorCode ?? 0 }, 'message failed');
        } else this.log.debug({ conversation_id: c.id, wamid: cmd.wamid, status: cmd.status }, 'message status');
        const bo = opaque.get(cmd.wamid);
        statuses.push({
          wamid: cmd.wamid, status: cmd.status, at: cmd.at, recipientId: c.meta.waId,
          ...(bo ? { bizOpaqueCallbackData: bo } : {}), ...(cmd.errorCode ? { errorCode: cmd.errorCode } : {}),
        });
      } else if (cmd.type === 'timer.schedule') {
        c.timerOps = [...c.timerOps.filter((o) => !(o.type === 'timer.schedule' && o.id === cmd.id)), cmd];
      } else if (cmd.type === 'webhook.message') {
        const row = c.inbound.get(cmd.id) ?? (await this.readInbound(c, cmd.id));
        if (row) values.push(inboundMessageValue(c.meta.waId, cmd.id, row));
      } else if (cmd.type === 'webhook.identity_changed') {
        values.push(identityChangedValue(c.meta.waId, c.crypto.remoteIdentityHash() ?? '', cmd.at, c.id));
      } else if (cmd.type === 'timer.cancel') {
        // A timer scheduled earlier in this drain was never added: dropping the schedule is the cancel.
        const scheduledHere = c.timerOps.some((o) => o.type === 'timer.schedule' && o.id === cmd.id);
        c.timerOps = c.timerOps.filter((o) => o.id !== cmd.id);
        if (!scheduledHere) c.timerOps.push(cmd);
      }
    }
    if (statuses.length) {
      values.push(statusValue(statuses));
      const fields: Record<string, number> = {};
      for (const st of statuses) {
        const f = st.status === 'failed' ? `failed:${st.errorCode ?? 0}` : st.status;
        fields[f] = (fields[f] ?? 0) + 1;
        if (st.status === 'delivered') {
          const kind = kinds.get(st.wamid) ?? 'service';
          const f2 = kind === 'template' ? 'billable:template' : 'free:service';
          fields[f2] = (fields[f2] ?? 0) + 1;
        }
      }
      await this.sinks.count(c.meta.businessId, fields);
    }
    const inboundCount = effects.filter((e) => e.type === 'webhook.message').length;
    if (inboundCount) {
      metrics.inbound.inc(inboundCount);
      await this.sinks.count(c.meta.businessId, { inbound: inboundCount });
    }
    if (values.length) await this.sinks.webhook(c.meta.businessId, c.meta.phoneNumberId, values);
    if (sends.length) {
      try {
        const { unknown, refused } = await this.transport.send(sends);
        for (const s of sends) {
          const code = refused.get(s.id);
          results.push(unknown.has(s.id)
            ? { type: 'TRANSPORT_REJECTED', wamid: s.id, at: now, reason: 'unknown_recipient' }
            : code !== undefined
              ? { type: 'TRANSPORT_REJECTED', wamid: s.id, at: now, reason: 'refused', code }
              : { type: 'TRANSPORT_ACCEPTED', wamid: s.id, at: now });
        }
      } catch (e) {
        if (!(e instanceof TransportUnavailableError)) throw e;
        for (const s of sends) results.push({ type: 'TRANSPORT_REJECTED', wamid: s.id, at: now, reason: 'unavailable' });
      }
    }
    // (The outbox is cleared when the drain releases the lease, once every effect of it has been applied.)
    return results;
  }

  /**
   * Applies the drain's netted timer commands to the timers queue, then clears the outbox that kept them
   * (a crash before this replays them from the outbox; schedules and cancels are idempotent by job id).
   */
  private async applyTimers(c: Loaded): Promise<void> {
    if (!c.timerOps.length) return;
    for (const cmd of c.timerOps) {
      if (cmd.type === 'timer.schedule') {
        const event: MailboxEvent = cmd.event === 'RETRANSMIT_DUE'
          ? { type: 'RETRANSMIT_DUE', at: cmd.at, timerId: cmd.id }
          : { type: 'BUNDLE_RETRY_DUE', at: cmd.at };
        await this.sinks.timer(c.id, cmd.id, cmd.at, event);
      } else if (cmd.type === 'timer.cancel') {
        await this.sinks.cancelTimer(c.id, cmd.id);
      }
    }
    c.timerOps = [];
    c.outbox = [];
  }

  private async readCiphertext(c: Loaded, wamid: string): Promise<{ type: number; body: string } | null> {
    const [body, type] = await c.redis.hmget(this.keys.message(c.id, wamid), 'ct', 'ty');
    return body && type ? { type: Number(type), body } : null;
  }

  private async readInbound(c: Loaded, id: string): Promise<InboundRow | null> {
    const rowKey = this.keys.message(c.id, id);
    const sealed = await c.redis.hget(rowKey, 'c');
    return sealed ? (JSON.parse(open(c.dk, sealed, `${rowKey}:c`).toString()) as InboundRow) : null;
  }

  private async readOpaque(c: Loaded, wamid: string, kept?: StatusCommand['row']): Promise<{ bo: string | undefined; kind: string; acceptedAt: number | null }> {
    const rowKey = this.keys.message(c.id, wamid);
    const [sealed, kind, at] = kept ? [kept.bo ?? null, kept.k ?? null, kept.at ?? null] : await c.redis.hmget(rowKey, 'bo', 'k', 'at');
    return { bo: sealed ? open(c.dk, sealed, `${rowKey}:bo`).toString() : undefined, kind: kind ?? 'service', acceptedAt: at ? Number(at) : null };
  }
}

/**
 * The stored form of a conversation's Signal state: the remote identity's length (2 bytes), the identity,
 * then the session record, all raw bytes (the record is ~4 KB with its post-quantum ratchet state).
 */
/**
 * The stored snapshot: the sealed, deflated bytes of a string key (see snapshot-codec.ts), or the fields of
 * the hash it was before (v, s, t); null when there is none.
 */
async function readStoredSnapshot(redis: Redis, key: string): Promise<Buffer | Record<string, string> | null> {
  try {
    return await redis.getBuffer(key);
  } catch (e) {
    if (!String((e as Error).message).startsWith('WRONGTYPE')) throw e;
    const row = await redis.hgetall(key);
    return row.s ? row : null;
  }
}

function encodeSession(k: { session: Uint8Array | null; remoteIdentity: Uint8Array | null }): Buffer {
  const identity = k.remoteIdentity ?? new Uint8Array(0);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(identity.length);
  return Buffer.concat([head, identity, k.session ?? new Uint8Array(0)]);
}

function decodeSession(raw: Buffer): { session: Uint8Array | null; remoteIdentity: Uint8Array | null } {
  if (raw[0] === 0x7b) {
    // Written before the binary form: JSON {s, i} with base64 fields.
    const parsed = JSON.parse(raw.toString()) as { s?: string; i?: string };
    return {
      session: parsed.s ? new Uint8Array(Buffer.from(parsed.s, 'base64')) : null,
      remoteIdentity: parsed.i ? new Uint8Array(Buffer.from(parsed.i, 'base64')) : null,
    };
  }
  const n = raw.readUInt16BE(0);
  const identity = raw.subarray(2, 2 + n);
  const session = raw.subarray(2 + n);
  return { session: session.length ? new Uint8Array(session) : null, remoteIdentity: n ? new Uint8Array(identity) : null };
}

/** Makes a Redis client able to run the actor's commit script (once per connection). */
export function defineCommitScript(r: Redis): void {
  r.defineCommand('sealpostCommit', { lua: COMMIT_LUA });
}
