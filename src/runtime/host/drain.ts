import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ConversationEvent } from '../../../machines/conversation.ts';
import { metrics } from '../../ops/metrics.ts';
import type { MailboxEvent } from '../mailbox.ts';
import { applyTimers, executeEffects } from './effects.ts';
import { keepLease, LeaseBusyError, releaseLease, takeLease } from './lease.ts';
import { load, readState } from './load.ts';
import type { Loaded } from './loaded.ts';
import type { HostParts } from './parts.ts';
import { step } from './step.ts';
import { noteConversation, untraced } from '../trace-context.ts';

/**
 * Drains the conversation's mailbox under its lease; `pending` tells whether events arrived meanwhile (the
 * worker then wakes the conversation again).
 */
export async function drainAndCheck(h: HostParts, conversationId: string): Promise<{ handled: number; pending: boolean }> {
  const token = randomUUID();
  const leaseKey = h.keys.lease(conversationId);
  const mailboxKey = h.keys.mailbox(conversationId);
  // The conversation's store: the shared one, or its business's region's.
  const redis = await h.stores.forConversation(conversationId);
  // The lease and the reads go out together (one round trip: same connection, same hash slot, executed in
  // order), so the reads see what was there once the lease was taken; without the lease they are dropped.
  const started = performance.now();
  // This process's state of the conversation after its last drain here, if any (used only if still current):
  // with one at hand the Signal session (kilobytes) is not read unless it turns out stale.
  const warm = h.warm.take(conversationId);
  const [lease, read, batch] = await Promise.allSettled([
    takeLease(redis, leaseKey, token, h.leaseMs),
    readState(h, redis, conversationId, !warm),
    redis.lrange(mailboxKey, 0, h.batchSize - 1),
  ]);
  if (lease.status === 'rejected') throw lease.reason;
  if (!lease.value) throw new LeaseBusyError(conversationId);
  if (read.status === 'rejected' || batch.status === 'rejected') {
    // Taken but unusable: give the lease back at once rather than leave it to expire.
    await releaseLease(redis, h.keys, conversationId, token, false).catch(() => undefined);
    throw read.status === 'rejected' ? read.reason : (batch as PromiseRejectedResult).reason;
  }
  const state = read.value;
  const firstBatch = batch.value;
  const stopRenewing = keepLease(redis, leaseKey, token, h.leaseMs);
  let handled = 0;
  // Set once every effect the outbox held has been applied: the release then clears it (a crash before
  // that replays it, which is safe: effects are idempotent).
  let outboxDone = false;
  let waiting = 0;
  let loaded: Loaded | null = null;
  try {
    loaded = await load(h, redis, conversationId, state, warm);
    handled = await run(h, redis, conversationId, token, loaded, firstBatch);
    outboxDone = true;
    metrics.drainSeconds.observe((performance.now() - started) / 1000);
  } finally {
    stopRenewing();
    waiting = await releaseLease(redis, h.keys, conversationId, token, outboxDone);
  }
  // Every step committed: what is in memory is what Redis holds, worth keeping for the next drain.
  if (loaded && !loaded.deleted && loaded.stored) {
    h.warm.keep(conversationId, {
      stored: loaded.stored, version: loaded.version, waSealed: loaded.waSealed, waId: loaded.meta.waId, display: loaded.meta.display,
      identity: loaded.identity, snapshot: loaded.snapshot, crypto: loaded.crypto, rowInfo: loaded.rowInfo,
    });
  }
  return { handled, pending: waiting > 0 };
}

/** The drain's body, under the lease: replay the outbox, then steps until the mailbox is empty. */
async function run(h: HostParts, redis: Redis, conversationId: string, token: string, loaded: Loaded | null, firstBatch: string[]): Promise<number> {
  const mailboxKey = h.keys.mailbox(conversationId);
  if (!loaded) {
    // No such conversation (deleted, or an event for an id we never made): drop what waits for it.
    await redis.del(mailboxKey);
    return 0;
  }
  if (loaded.warm) metrics.warmDrains.inc();
  else metrics.hydrations.inc();
  noteConversation(loaded);
  let handled = 0;
  let pending: ConversationEvent[] = [];
  let batch: string[] | null = firstBatch;
  if (loaded.outbox.length) {
    pending = await executeEffects(h, loaded, loaded.outbox);
    batch = null; // effects went over the network meanwhile: read the mailbox afresh
  }
  for (let i = 0; i < h.maxSteps; i++) {
    const raw = batch ?? (await redis.lrange(mailboxKey, 0, h.batchSize - 1));
    batch = null;
    const fromMailbox = raw.map((r) => toMachineEvent(loaded, JSON.parse(r) as MailboxEvent));
    // Retention ticks go last: they are timers, and a message arriving in the same batch keeps the
    // conversation alive instead of being lost with it.
    const events = [...pending, ...fromMailbox.filter((e) => e.type !== 'PURGE_DUE'), ...fromMailbox.filter((e) => e.type === 'PURGE_DUE')];
    pending = [];
    if (!events.length) break;
    const effects = await step(h, loaded, events, raw.length, token);
    handled += events.length;
    pending = await executeEffects(h, loaded, effects);
    if (loaded.deleted) break;
  }
  if (pending.length && !loaded.deleted) {
    // Out of steps with results still to record: commit them so the outbox is not replayed needlessly.
    const effects = await step(h, loaded, pending, 0, token);
    await executeEffects(h, loaded, effects);
  }
  await applyTimers(h, loaded);
  return handled;
}

/**
 * A mailbox event as the machine sees it: an envelope's body stays with the drain, out of the machine and the
 * trace, and so does its trace context.
 */
function toMachineEvent(c: Loaded, traced: MailboxEvent): ConversationEvent {
  const e = untraced(traced);
  if (e.type === 'ENVELOPE') {
    c.envelopes.set(e.id, { messageType: e.messageType, body: e.body, ...(e.device ? { device: e.device } : {}) });
    return { type: 'ENVELOPE', id: e.id, at: e.at, messageType: e.messageType };
  }
  return e;
}
