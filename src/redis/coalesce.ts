/**
 * Writes that many callers make within one turn of the event loop, gathered into one per key: the callers
 * that add to a key before its flush starts share that flush and each awaits it, so a caller still knows its
 * write is in Redis (or failed) before it goes on, exactly as with a write of its own. Nothing waits for a
 * timer: the flush starts on the next turn (setImmediate), so a lone write is as quick as before and a busy
 * process sends one write where many drains finishing together sent one each.
 */
export class Coalescer<T> {
  private readonly pending = new Map<string, { items: T[]; done: Promise<void> }>();

  constructor(private readonly flush: (key: string, items: T[]) => Promise<void>) {}

  /** Adds `item` to the next flush of `key`; resolves once that flush is done, rejects if it failed. */
  add(key: string, item: T): Promise<void> {
    let batch = this.pending.get(key);
    if (!batch) {
      const items: T[] = [];
      const done = new Promise<void>((resolve, reject) => {
        setImmediate(() => {
          this.pending.delete(key);
          this.flush(key, items).then(resolve, reject);
        });
      });
      batch = { items, done };
      this.pending.set(key, batch);
    }
    batch.items.push(item);
    return batch.done;
  }
}
