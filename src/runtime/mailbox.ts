import { createHash } from 'node:crypto';
import type { Stores } from '../store/stores.ts';
import type { Queue } from 'bullmq';
import type { Keys } from '../store/keys.ts';

/**
 * An event as it waits in a conversation's mailbox (the host turns it into a machine event). `tp`, only while
 * tracing is on: the W3C `traceparent` of the span that posted it (src/runtime/trace-context.ts); never seen
 * by the machine or its trace.
 */
export type MailboxEvent = (
  | { type: 'SEND'; wamid: string; at: number; ttlMs?: number }
  | { type: 'DELIVERED' | 'READ'; wamid: string; at: number }
  | { type: 'ENVELOPE'; id: string; at: number; messageType: number; body: string }
  | { type: 'BUNDLE_RETRY_DUE'; at: number }
  | { type: 'RETRANSMIT_DUE'; at: number; timerId?: string }
  | { type: 'MARK_READ'; id: string; at: number }
  | { type: 'PURGE_DUE'; at: number }
  | { type: 'ERASE'; at: number }
) & { tp?: string };

/** The BullMQ priority of wakes for newly accepted sends (any priority runs after un-prioritized jobs). */
export const SENDS_PRIORITY = 1;

/** Job data of a wake-up job: only the conversation id. */
export interface WakeJob {
  conversationId: string;
}

/**
 * Per-conversation FIFO mailboxes plus a deduplicated wake-up job: at most one job per conversation is
 * active and at most one waits (BullMQ `keepLastIfActive`), so one conversation's events are handled by one
 * worker at a time, in mailbox order, across any number of processes.
 */
export class Mailboxes {
  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly wakeQueue: Queue<WakeJob>,
  ) {}

  /** Appends events to the conversation's mailbox and makes sure a wake-up job exists. */
  async post(conversationId: string, events: MailboxEvent[], ttlMs: number): Promise<void> {
    if (!events.length) return;
    const key = this.keys.mailbox(conversationId);
    await (await this.stores.forConversation(conversationId))
      .multi()
      .rpush(key, ...events.map((e) => JSON.stringify(e)))
      .pexpire(key, ttlMs)
      .exec();
    await this.wake(conversationId);
  }

  /**
   * Adds the conversation's wake-up job unless one is already waiting. `sends` marks the wake of a newly
   * accepted outbound message: such wakes queue behind every other (receipts, users' messages, timers), so a
   * business's burst of new sends (a campaign to 100,000 users) does not hold up acknowledgements and replies
   * in conversations already under way. Within each lane, first in, first out.
   */
  async wake(conversationId: string, lane: 'events' | 'sends' = 'events'): Promise<void> {
    await this.wakeQueue.add('wake', { conversationId }, {
      // BullMQ takes jobs without a priority before any prioritized job.
      ...(lane === 'sends' ? { priority: SENDS_PRIORITY } : {}),
      // A digest, not the id: BullMQ's event stream outlives jobs, and must not name deleted conversations.
      deduplication: { id: createHash('sha256').update(conversationId).digest('hex').slice(0, 32), keepLastIfActive: true },
      removeOnComplete: true,
      removeOnFail: 1000,
      attempts: 20,
      backoff: { type: 'exponential', delay: 200 },
    });
  }
}
