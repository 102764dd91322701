import { Coalescer } from '../redis/coalesce.ts';
import { LuaScript } from './lua/read-script.ts';
import { SENDS_LANE, shardOf } from './shards.ts';
import type { Stores } from '../store/stores.ts';
import type { Keys } from '../store/keys.ts';
import { pushWake } from './wake-list.ts';

/**
 * An event as it waits in a conversation's mailbox (the host turns it into a machine event). `tp`, only while
 * tracing is on: the W3C `traceparent` of the span that posted it (src/runtime/trace-context.ts); never seen
 * by the machine or its trace.
 */
export type MailboxEvent = (
  | { type: 'SEND'; wamid: string; at: number; ttlMs?: number }
  | { type: 'DELIVERED' | 'READ'; wamid: string; at: number; device?: number }
  | { type: 'ENVELOPE'; id: string; at: number; messageType: number; body: string; device?: number }
  | { type: 'BUNDLE_RETRY_DUE'; at: number }
  | { type: 'RETRANSMIT_DUE'; at: number; timerId?: string }
  | { type: 'MARK_READ'; id: string; at: number }
  | { type: 'SENDER_KEY'; group: string; dist: string; at: number }
  | { type: 'PURGE_DUE'; at: number }
  | { type: 'ERASE'; at: number }
) & { tp?: string };

/** Job data of a wake-up job of the conversations queue (added by versions before the wake list). */
export interface WakeJob {
  shard: number;
  region?: string;
}

const MARK = new LuaScript('mark-2.lua');
const POST = new LuaScript('post-2.lua');

/**
 * How long a shard's awake flag lasts unless its loop's first claim clears it: a wake-up lost with a process
 * that popped it and died holds the shard's marks back this long, until the sweep wakes it (stale-4.lua).
 */
export const AWAKE_MS = 5_000;

type ReadyMark = { conversationId: string; lane: 'events' | 'sends'; at: number };

/**
 * Per-conversation FIFO mailboxes, and the wake-ups that get them drained: a conversation with events waiting
 * is marked ready in its shard (src/runtime/shards.ts), and the shard gets a wake-up on the wake list unless
 * one waits for it already (src/runtime/wake-list.ts). A shard's loop claims its ready conversations and drains
 * each under the conversation's own fenced lease (src/runtime/shard-runner.ts), so one conversation's events
 * are handled by one worker at a time, in mailbox order, across any number of processes.
 */
export class Mailboxes {
  /** Ready marks of one event-loop turn, one ZADD per shard (src/redis/coalesce.ts). */
  private readonly marks: Coalescer<ReadyMark>;
  private lastAt = 0;

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
  ) {
    this.marks = new Coalescer((key, items) => this.mark(key, items));
  }

  /**
   * Appends events to the conversation's mailbox and makes sure the conversation gets drained: marked ready,
   * unless a drain holds its lease now (post-2.lua), which takes them itself.
   */
  async post(conversationId: string, events: MailboxEvent[], ttlMs: number): Promise<void> {
    if (!events.length) return;
    const held = await POST.run(await this.stores.forConversation(conversationId), [this.keys.mailbox(conversationId), this.keys.lease(conversationId)],
      [ttlMs, ...events.map((e) => JSON.stringify(e))]);
    if (Number(held) !== 1) await this.wake(conversationId);
  }

  /**
   * Marks the conversation ready in its shard and wakes the shard unless the conversation was marked already
   * (whoever marked it wakes the shard; a mark nobody woke for is found by the runner's sweep) or a wake-up of
   * the shard waits already (its awake flag, mark-2.lua: that wake-up's loop claims it). `sends` marks the
   * wake of a newly accepted outbound message: such marks go behind every other (receipts, users' messages,
   * timers), in the shard's ready set and, when they are all a shard has, on the wake list's sends lane, so a
   * business's burst of new sends (a campaign to 100,000 users) does not hold up acknowledgements and replies
   * in conversations already under way. Within each lane, first in, first out.
   */
  async wake(conversationId: string, lane: 'events' | 'sends' = 'events'): Promise<void> {
    const region = await this.stores.regionOf(conversationId);
    // Strictly increasing within this process (ties in the ready set go by id, not by arrival).
    this.lastAt = Math.max(Date.now(), this.lastAt + 0.01);
    await this.marks.add(`${region ?? ''}|${shardOf(conversationId)}`, { conversationId, lane, at: this.lastAt });
  }

  /** Pushes a wake-up of the shard onto the wake list (in the lane: as {@link wake}). */
  async wakeShard(shard: number, region: string | null, lane: 'events' | 'sends' = 'events'): Promise<void> {
    await pushWake(this.stores.shared, this.keys, shard, region, lane);
  }

  private async mark(key: string, items: ReadyMark[]): Promise<void> {
    const sep = key.indexOf('|');
    const region = key.slice(0, sep) || null;
    const shard = Number(key.slice(sep + 1));
    const args: (string | number)[] = [];
    for (const m of items) args.push(m.lane === 'sends' ? m.at + SENDS_LANE : m.at, m.conversationId);
    // LT: a conversation already ready keeps its earlier place, and moves up to the events lane if it was a send.
    const lane = items.every((m) => m.lane === 'sends') ? 's' : 'e';
    const wake = await MARK.run(this.stores.forRegion(region), [this.keys.shardReady(shard), this.keys.shardAwake(shard)], [AWAKE_MS, lane, ...args]);
    if (wake === 's' || wake === 'e') await this.wakeShard(shard, region, wake === 's' ? 'sends' : 'events');
  }
}
