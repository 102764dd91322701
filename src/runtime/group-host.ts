import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import { groupMachine, type GroupCommand, type GroupContext, type GroupEvent, type GroupInput } from '../../machines/group.ts';
import { GroupKeys } from '../signal/group-keys.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { GroupRecord, GroupStore } from '../store/groups.ts';
import type { Keys } from '../store/keys.ts';
import { open, seal, type DataKeys } from '../store/sealer.ts';
import type { Stores } from '../store/stores.ts';
import type { ChangeValue } from '../webhook/envelope.ts';
import type { GroupTraceLine } from '../trace/format.ts';
import { executeGroupEffects, runLocal, type GroupLoaded } from './group-commands.ts';
import { conversationId } from './ids.ts';
import type { Mailboxes } from './mailbox.ts';
import type { TransportClient } from './transport-client.ts';

/**
 * What waits in a group actor's mailbox. Members are named by conversation id; a member's sender key travels
 * sealed; a member's message as its ciphertext.
 */
export type GroupMailboxEvent =
  /** The group's record changed (members, or deleted): the drain compares and tells the machine. */
  | { type: 'CHECK'; at: number }
  | { type: 'SEND'; wamid: string; at: number; ttlMs?: number }
  | { type: 'RECEIPT'; wamid: string; at: number; member: string; device: number }
  | { type: 'KEY_HELD'; at: number; member: string; device: number; dist: string }
  | { type: 'KEY_SENT'; at: number; member: string; devices: number[]; dist: string }
  | { type: 'RETRANSMIT_DUE'; at: number; timerId?: string }
  | { type: 'ENVELOPE'; id: string; at: number; member: string; body: string }
  | { type: 'MEMBER_KEY'; at: number; member: string; dist: string; key: string };

/** A job of the groups queue: wake a group's actor, or (delayed) one of its timers. */
export interface GroupJob {
  b: string;
  g: string;
  timer?: { id: string; at: number };
}

/** The group's lease is held by another worker: the job is retried (BullMQ backoff). */
export class GroupBusyError extends Error {
  constructor(readonly groupId: string) {
    super('group lease held by another worker');
    this.name = 'GroupBusyError';
  }
}

export interface GroupHostDeps {
  stores: Stores;
  keys: Keys;
  dataKeys: DataKeys;
  businesses: BusinessStore;
  groups: GroupStore;
  transport: TransportClient;
  queue: Queue<GroupJob>;
  mailboxes: Mailboxes;
  /** Makes sure a member's conversation exists before its first event. */
  ensure(conv: string, businessId: string, phoneNumberId: string, waId: string): Promise<void>;
  webhook(businessId: string, phoneNumberId: string, values: ChangeValue[]): Promise<void>;
  count(businessId: string, fields: Record<string, number>): Promise<void>;
  retentionOf(businessId: string): Promise<number>;
  log: Logger;
  leaseMs: number;
  retransmitBaseMs: number;
  retransmitMaxMs: number;
}

const BATCH = 64;
const MAX_ROUNDS = 50;
const TRACE_MAX = 300;

// Commits a group actor's step: the lease must still be ours and the version the one read; sets the snapshot,
// the sender keys and the outbox, trims the handled mailbox entries, applies the row writes and appends the
// trace, all at once. KEYS: lease, actor, mailbox, trace, rows...; ARGV: token, version, s, k, o, handled,
// ttl ms, row ops (JSON), lease ms, trace seq, trace lines...
const COMMIT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local v = tonumber(redis.call('HGET', KEYS[2], 'v') or '0')
if v ~= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[2], 'v', v + 1, 's', ARGV[3], 'k', ARGV[4], 'o', ARGV[5], 'q', ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
local n = tonumber(ARGV[6])
if n > 0 then redis.call('LTRIM', KEYS[3], n, -1) end
local ops = cjson.decode(ARGV[8])
for i, op in ipairs(ops) do
  local key = KEYS[4 + i]
  if op.d then redis.call('DEL', key) else
    for f, val in pairs(op.s) do redis.call('HSET', key, f, val) end
    redis.call('PEXPIRE', key, ARGV[7])
  end
end
if #ARGV >= 11 then
  for i = 11, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
  redis.call('LTRIM', KEYS[4], -${TRACE_MAX}, -1)
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
return v + 1`;

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/**
 * Hosts group actors (machines/group.ts): one writer per group across processes (a fenced lease in Redis),
 * its mailbox drained in order, each step committed atomically (snapshot, sender keys, message rows, trace)
 * before any effect leaves; effects are replayed from the committed outbox after a crash. Timers are delayed
 * jobs of the groups queue (visible on the queue board). docs/groups.md, "Sending".
 */
export class GroupHost {
  constructor(private readonly d: GroupHostDeps) {}

  /** Appends events to the group's mailbox and wakes its actor. */
  async post(businessId: string, groupId: string, events: GroupMailboxEvent[]): Promise<void> {
    if (!events.length) return;
    const redis = await this.d.stores.forBusiness(this.d.businesses, businessId);
    const key = this.d.keys.groupMailbox(businessId, groupId);
    const ttl = (await this.d.retentionOf(businessId)) + 86_400_000;
    await redis.multi().rpush(key, ...events.map((e) => JSON.stringify(e))).pexpire(key, ttl).exec();
    await this.wake(businessId, groupId);
  }

  async wake(businessId: string, groupId: string): Promise<void> {
    await this.d.queue.add('wake', { b: businessId, g: groupId }, {
      deduplication: { id: `g-${groupId}`, keepLastIfActive: true },
      removeOnComplete: true, removeOnFail: 1000, attempts: 30, backoff: { type: 'exponential', delay: 200 },
    });
  }

  /** A job of the groups queue: a timer becomes a mailbox event; a wake drains. */
  async run(job: GroupJob): Promise<void> {
    if (job.timer) {
      await this.post(job.b, job.g, [{ type: 'RETRANSMIT_DUE', at: job.timer.at, timerId: job.timer.id }]);
      return;
    }
    await this.drain(job.b, job.g);
  }

  /** Drains the group's mailbox under its lease. */
  async drain(businessId: string, groupId: string): Promise<number> {
    const redis = await this.d.stores.forBusiness(this.d.businesses, businessId);
    const leaseKey = this.d.keys.groupLease(businessId, groupId);
    if (!(await this.d.businesses.info(businessId))) {
      // The business was deleted (its groups with it, src/runtime/groups.ts): nothing of the actor can be read.
      const k = this.d.keys;
      await redis.del(k.groupActor(businessId, groupId), k.groupMailbox(businessId, groupId), k.groupTrace(businessId, groupId), leaseKey);
      return 0;
    }
    const token = randomBytes(12).toString('base64url');
    if ((await redis.set(leaseKey, token, 'PX', this.d.leaseMs, 'NX')) !== 'OK') throw new GroupBusyError(groupId);
    let handled = 0;
    try {
      const c = await this.load(redis, businessId, groupId, token);
      let pending: GroupEvent[] = c.outbox.length ? await executeGroupEffects(this.d, c, c.outbox) : [];
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const raw = await redis.lrange(this.d.keys.groupMailbox(businessId, groupId), 0, BATCH - 1);
        const events: GroupEvent[] = [...pending];
        const parsed = raw.map((line) => JSON.parse(line) as GroupMailboxEvent);
        // The record changed since it was read (a CHECK is posted after each change): read it again.
        if (round > 0 && parsed.some((e) => e.type === 'CHECK')) await this.readRecord(c);
        for (const e of parsed) events.push(this.toMachineEvent(c, e));
        await this.noteRecord(c, events);
        if (!events.length && !c.outbox.length) break;
        const effects = await this.step(c, events);
        await this.commit(redis, c, raw.length, effects);
        handled += raw.length;
        pending = await executeGroupEffects(this.d, c, effects);
        if (c.snapshot.status === 'done') break;
      }
    } finally {
      await redis.eval(RELEASE, 1, leaseKey, token);
    }
    // Events that arrived after the last read get their own wake.
    if ((await redis.llen(this.d.keys.groupMailbox(businessId, groupId))) > 0) await this.wake(businessId, groupId);
    return handled;
  }

  private async load(redis: Redis, businessId: string, groupId: string, token: string): Promise<GroupLoaded> {
    const actorKey = this.d.keys.groupActor(businessId, groupId);
    const [v, s, k, o, q] = await redis.hmget(actorKey, 'v', 's', 'k', 'o', 'q');
    const dk = await this.d.dataKeys.get(businessId);
    const record = await this.d.groups.get(businessId, groupId);
    let snapshot: AnyMachineSnapshot;
    if (s) {
      const persisted = JSON.parse(open(dk, s, `${actorKey}:s`).toString()) as { value: string; context: GroupContext };
      snapshot = groupMachine.resolveState(persisted) as unknown as AnyMachineSnapshot;
    } else {
      snapshot = initialTransition(groupMachine, inputOf(groupId, this.d))[0] as unknown as AnyMachineSnapshot;
    }
    const c: GroupLoaded = {
      redis, businessId, groupId, token, dk, version: Number(v ?? 0), snapshot, traceSeq: Number(q ?? 0),
      senderKeys: new GroupKeys(k ? open(dk, k, `${actorKey}:k`).toString() : null),
      outbox: o ? (JSON.parse(o) as GroupCommand[]) : [],
      record, owner: null, phoneNumberId: null, members: new Map(), envelopes: new Map(), memberKeys: new Map(), rowOps: new Map(), trace: [],
      retentionMs: await this.d.retentionOf(businessId),
    };
    await this.readRecord(c, record);
    return c;
  }

  /** The group's record, its number and its members (conversation id → wa_id), read afresh unless given. */
  private async readRecord(c: GroupLoaded, given?: GroupRecord | null): Promise<void> {
    const record = given !== undefined ? given : await this.d.groups.get(c.businessId, c.groupId);
    const pn = record ? await this.d.businesses.phoneNumber(record.phone_number_id) : null;
    const members = new Map<string, string>();
    if (record) for (const wa of record.participants) members.set(await conversationId(this.d.dataKeys, c.businessId, record.phone_number_id, wa), wa);
    c.record = record;
    c.owner = pn?.display_phone_number ?? c.owner;
    c.phoneNumberId = record?.phone_number_id ?? c.phoneNumberId;
    c.members = members;
  }

  /** A mailbox entry as the machine sees it: what only the host needs (ciphertext, a sealed key) stays with the host. */
  private toMachineEvent(c: GroupLoaded, e: GroupMailboxEvent): GroupEvent {
    if (e.type === 'ENVELOPE') {
      c.envelopes.set(e.id, e.body);
      return { type: 'ENVELOPE', id: e.id, at: e.at, member: e.member };
    }
    if (e.type === 'MEMBER_KEY') {
      c.memberKeys.set(e.member, e.key);
      return { type: 'MEMBER_KEY', at: e.at, member: e.member, dist: e.dist };
    }
    if (e.type === 'CHECK') return { type: 'RETRANSMIT_DUE', at: e.at, timerId: 'check' };
    return e;
  }

  /** The record is the truth about members: a difference (or the group's deletion) goes to the machine first. */
  private async noteRecord(c: GroupLoaded, events: GroupEvent[]): Promise<void> {
    if (c.snapshot.status === 'done') return;
    const ctx = c.snapshot.context as GroupContext;
    const at = Date.now();
    if (!c.record) {
      if (events.length || ctx.messages.length) events.unshift({ type: 'DELETED', at });
      return;
    }
    const now = [...c.members.keys()];
    if (now.length !== ctx.members.length || now.some((m, i) => m !== ctx.members[i])) events.unshift({ type: 'MEMBERS', at, members: now });
  }

  /** Runs the events through the machine, local commands (cryptography) at once; returns the effects. */
  private async step(c: GroupLoaded, events: GroupEvent[]): Promise<GroupCommand[]> {
    const effects: GroupCommand[] = [];
    const queue = [...events];
    while (queue.length) {
      const event = queue.shift()!;
      const [next, actions] = transition(groupMachine, c.snapshot as never, event as never);
      c.snapshot = next as unknown as AnyMachineSnapshot;
      const commands = actions.flatMap((a) => (a.type === 'emitCommands' ? (a.params as { list: GroupCommand[] }).list : []));
      // The first line of a new group's trace carries the machine's input, so the trace replays from nothing.
      c.traceSeq += 1;
      const line: GroupTraceLine = {
        group_id: c.groupId, seq: c.traceSeq, at: event.at, event, state: String(c.snapshot.value), commands,
        ...(c.traceSeq === 1 ? { input: inputOf(c.groupId, this.d) } : {}),
      };
      c.trace.push(JSON.stringify(line));
      const results: GroupEvent[] = [];
      for (const cmd of commands) {
        const local = await runLocal(this.d, c, cmd, event.at);
        if (local === undefined) effects.push(cmd);
        else if (local) results.push(local);
      }
      queue.unshift(...results);
    }
    return effects;
  }

  private async commit(redis: Redis, c: GroupLoaded, handled: number, effects: GroupCommand[]): Promise<void> {
    const actorKey = this.d.keys.groupActor(c.businessId, c.groupId);
    const snap = JSON.stringify({ value: c.snapshot.value, context: c.snapshot.context });
    const ops = [...c.rowOps];
    const ttl = c.retentionMs + 86_400_000;
    const r = await redis.eval(COMMIT, 4 + ops.length,
      this.d.keys.groupLease(c.businessId, c.groupId), actorKey, this.d.keys.groupMailbox(c.businessId, c.groupId), this.d.keys.groupTrace(c.businessId, c.groupId),
      ...ops.map(([k]) => k),
      c.token, String(c.version), seal(c.dk, snap, `${actorKey}:s`), seal(c.dk, c.senderKeys.serialize(), `${actorKey}:k`), JSON.stringify(effects), String(handled),
      String(ttl), JSON.stringify(ops.map(([, op]) => (op === null ? { d: 1 } : { s: op }))), String(this.d.leaseMs), String(c.traceSeq), ...c.trace) as number;
    if (r === -1) throw new GroupBusyError(c.groupId);
    if (r === -2) throw new Error('group actor changed under its lease');
    c.version = r;
    c.rowOps.clear();
    c.trace = [];
    c.outbox = effects;
  }
}

function inputOf(groupId: string, d: Pick<GroupHostDeps, 'retransmitBaseMs' | 'retransmitMaxMs'>): GroupInput {
  return { groupId, retransmitBaseMs: d.retransmitBaseMs, retransmitMaxMs: d.retransmitMaxMs };
}
