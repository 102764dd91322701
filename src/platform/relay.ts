import type { Faults } from './faults.ts';

/**
 * Carries messages across the simulated transport in either direction, applying the current faults
 * (drop, duplicate, reorder, delay). Delivery is always asynchronous, after the sender got its answer,
 * as with a real transport. Timers are tracked so closing the platform cancels what is still in flight.
 */
export class Relay {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly immediates = new Set<NodeJS.Immediate>();
  private closed = false;

  constructor(private readonly faults: Faults) {}

  /** Messages still in flight. */
  get inFlight(): number {
    return this.timers.size + this.immediates.size;
  }

  /** Delivers by calling `deliver` once per surviving copy (zero, one or two times). */
  send(deliver: () => void): void {
    if (this.closed) return;
    for (const delay of this.faults.plan()) {
      if (delay <= 0) {
        // setImmediate keeps FIFO order between messages sent without delay.
        const h = setImmediate(() => {
          this.immediates.delete(h);
          deliver();
        });
        this.immediates.add(h);
      } else {
        const t = setTimeout(() => {
          this.timers.delete(t);
          deliver();
        }, delay);
        this.timers.add(t);
      }
    }
  }

  /** Drops everything in flight and refuses new sends. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    for (const h of this.immediates) clearImmediate(h);
    this.timers.clear();
    this.immediates.clear();
  }
}
