import { randomBytes } from 'node:crypto';
import { MinHeap } from './heap.ts';
import type { QueuedEvent, RouterEvent } from './events.ts';

/** Options of one pull; values are already validated and capped by the HTTP layer. */
export interface PullOptions {
  /** Most events to return. */
  max: number;
  /** How long to wait for a first event when none is ready (long poll); 0 answers at once. */
  waitMs: number;
  /** How long the pulled events stay invisible to other pullers unless acknowledged. */
  leaseMs: number;
}

interface Slot {
  event: QueuedEvent;
  /** Enqueue order: pulls are FIFO by it, redelivered events included. */
  seq: number;
  leased: boolean;
  /** Bumped on every lease, so a stale lease-heap entry is recognisable. */
  leaseGen: number;
}

interface Lease {
  until: number;
  slot: Slot;
  gen: number;
}

interface Waiter {
  max: number;
  leaseMs: number;
  resolve: (events: QueuedEvent[]) => void;
  timer: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

/**
 * An at-least-once event queue with leases, like SQS: a pulled event is invisible until its lease ends,
 * then pullable again; an ack deletes it. Ready events sit in a heap by enqueue order and leased ones in
 * a heap by lease end; both are cleaned lazily (an acked event is skipped when it surfaces), so no
 * operation scans the queue. Long-poll waiters are served in arrival order as soon as events are ready,
 * and a timer wakes them when the earliest lease expires.
 */
export class EventQueue {
  private readonly slots = new Map<string, Slot>();
  private readonly ready = new MinHeap<Slot>((a, b) => a.seq < b.seq);
  private readonly leases = new MinHeap<Lease>((a, b) => a.until < b.until);
  private readonly waiters: Waiter[] = [];
  private readonly idPrefix = `ev_${randomBytes(4).toString('hex')}_`;
  private seq = 0;
  private drainScheduled = false;
  private leaseTimer: NodeJS.Timeout | undefined;
  private leaseTimerAt = Infinity;
  private closed = false;

  constructor(private readonly clock: () => number = Date.now) {}

  /** Events held (ready or leased, not yet acknowledged). */
  get size(): number {
    return this.slots.size;
  }

  /** Pulls currently waiting (long polls). */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Appends an event and returns its `event_id`. */
  push(event: RouterEvent): string {
    const id = `${this.idPrefix}${++this.seq}`;
    const slot: Slot = { event: { ...event, event_id: id }, seq: this.seq, leased: false, leaseGen: 0 };
    this.slots.set(id, slot);
    this.ready.push(slot);
    this.scheduleDrain();
    return id;
  }

  /**
   * Leases up to `max` ready events, oldest first; with none ready, waits up to `waitMs` for some.
   * An aborted wait (the HTTP client went away) answers `[]` and leases nothing.
   */
  pull(opts: PullOptions, signal?: AbortSignal): Promise<QueuedEvent[]> {
    // Older waiters go first, so a pull that finds events while others wait must not overtake them.
    if (this.waiters.length === 0) {
      const now = this.reclaimExpired();
      const events = this.take(opts.max, opts.leaseMs, now);
      if (events.length > 0 || opts.waitMs <= 0 || this.closed) return Promise.resolve(events);
    }
    if (signal?.aborted) return Promise.resolve([]);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        max: opts.max,
        leaseMs: opts.leaseMs,
        resolve,
        timer: setTimeout(() => this.settle(waiter, []), opts.waitMs),
      };
      if (signal) {
        waiter.signal = signal;
        waiter.onAbort = () => this.settle(waiter, []);
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      this.scheduleDrain();
      this.armLeaseTimer();
    });
  }

  /** Deletes the events (leased or not); unknown ids are ignored. Returns how many were deleted. */
  ack(eventIds: readonly string[]): number {
    let n = 0;
    for (const id of eventIds) if (this.slots.delete(id)) n++;
    return n;
  }

  /** Answers every waiting pull with `[]` and stops the timers (the server is closing). */
  close(): void {
    this.closed = true;
    for (const w of [...this.waiters]) this.settle(w, []);
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = undefined;
  }

  private settle(w: Waiter, events: QueuedEvent[]): void {
    const i = this.waiters.indexOf(w);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    clearTimeout(w.timer);
    if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
    w.resolve(events);
  }

  private scheduleDrain(): void {
    if (this.drainScheduled || this.waiters.length === 0) return;
    this.drainScheduled = true;
    // One drain per tick: events pushed in the same tick reach a waiter as one batch.
    setImmediate(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    const now = this.reclaimExpired();
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      const events = this.take(w.max, w.leaseMs, now);
      if (events.length === 0) break;
      this.settle(w, events);
    }
    this.armLeaseTimer();
  }

  /** Moves events whose lease ended back to the ready heap; returns the time it used. */
  private reclaimExpired(): number {
    const now = this.clock();
    for (let top = this.leases.peek(); top && top.until <= now; top = this.leases.peek()) {
      this.leases.pop();
      const slot = top.slot;
      if (this.slots.get(slot.event.event_id) !== slot || !slot.leased || slot.leaseGen !== top.gen) continue;
      slot.leased = false;
      this.ready.push(slot);
    }
    return now;
  }

  private take(max: number, leaseMs: number, now: number): QueuedEvent[] {
    const out: QueuedEvent[] = [];
    while (out.length < max) {
      const slot = this.ready.pop();
      if (!slot) break;
      if (this.slots.get(slot.event.event_id) !== slot || slot.leased) continue;
      slot.leased = true;
      slot.leaseGen++;
      this.leases.push({ until: now + leaseMs, slot, gen: slot.leaseGen });
      out.push(slot.event);
    }
    return out;
  }

  /** Keeps one timer at the earliest lease end while someone waits, so a long poll sees redeliveries. */
  private armLeaseTimer(): void {
    if (this.closed) return;
    const top = this.leases.peek();
    if (this.waiters.length === 0 || !top) {
      if (this.leaseTimer) clearTimeout(this.leaseTimer);
      this.leaseTimer = undefined;
      this.leaseTimerAt = Infinity;
      return;
    }
    if (this.leaseTimer && this.leaseTimerAt <= top.until) return;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimerAt = top.until;
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = undefined;
      this.leaseTimerAt = Infinity;
      this.drain();
    }, Math.max(0, top.until - this.clock()) + 1);
  }
}
