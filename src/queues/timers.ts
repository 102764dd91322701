/**
 * The timers queue as producers see it: the jobs' shapes and how deletion jobs are added and removed (shard
 * timers add their ticks in src/runtime/shard-timers.ts; the worker that runs both is workers/timers.ts).
 */
import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { MailboxEvent } from '../runtime/mailbox.ts';

/**
 * A deletion job (and, from before timers were kept per shard, a timer job): at its time, `event` goes to the
 * conversation's mailbox.
 */
export interface TimerJob {
  conversationId: string;
  event: MailboxEvent;
}

/** A shard's timer tick (src/runtime/shard-timers.ts): at its time, the shard's due timers fire. */
export interface TickJob {
  shard: number;
  region?: string;
}

/** What the timers queue holds. */
export type TimersQueueJob = TimerJob | TickJob;

/** Whether a job of the timers queue is a shard's tick. */
export const isTick = (data: TimersQueueJob): data is TickJob => typeof (data as TickJob).shard === 'number';

/**
 * A timer's job id: stable (a replayed schedule is a no-op, a cancel finds it) but a digest, so BullMQ's
 * event stream never names a conversation after it was deleted.
 */
export const jobIdOf = (conversationId: string, timerId: string) => `t${createHash('sha256').update(`${conversationId}|${timerId}`).digest('hex').slice(0, 32)}`;

/**
 * Makes sure a deletion job wakes the conversation once a message's retention ends at `until`. Jobs are
 * bucketed (a tenth of the retention, 1 s to 60 s), so a busy conversation has one job per bucket, not one per
 * message; a message is deleted at most one bucket late (and Redis key TTLs back this up).
 */
export async function schedulePurge(queue: Queue<TimersQueueJob>, conversationId: string, until: number, retentionMs: number): Promise<void> {
  const at = purgeBucket(until, retentionMs);
  await queue.add('purge', { conversationId, event: { type: 'PURGE_DUE', at } }, {
    jobId: jobIdOf(conversationId, `purge:${at}`),
    delay: Math.max(0, at - Date.now()),
    removeOnComplete: true,
    removeOnFail: 1000,
    attempts: 10,
    backoff: { type: 'exponential', delay: 500 },
  });
}

/** When the deletion job for a retention end at `until` runs (see {@link schedulePurge}). */
export function purgeBucket(until: number, retentionMs: number): number {
  const bucket = Math.min(60_000, Math.max(1000, Math.floor(retentionMs / 10)));
  return Math.ceil(until / bucket) * bucket;
}

/** Removes the pending deletion jobs of a conversation that is gone (so no job names it any more). */
export async function cancelPurges(queue: Queue<TimersQueueJob>, conversationId: string, untils: number[], retentionMs: number): Promise<void> {
  const ids = new Set(untils.map((u) => jobIdOf(conversationId, `purge:${purgeBucket(u, retentionMs)}`)));
  for (const id of ids) await queue.remove(id);
}
