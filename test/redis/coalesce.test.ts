import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../src/redis/coalesce.ts';

describe('Coalescer', () => {
  it('gathers the adds of one turn per key into one flush, in order, and each caller awaits it', async () => {
    const flushes: [string, number[]][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const c = new Coalescer<number>(async (key, items) => {
      flushes.push([key, [...items]]);
      await gate;
    });
    let settled = 0;
    const waits = [c.add('a', 1), c.add('b', 9), c.add('a', 2), c.add('a', 3)].map((p) => p.then(() => settled++));
    await new Promise((r) => setImmediate(r));
    expect(flushes).toEqual([['a', [1, 2, 3]], ['b', [9]]]);
    expect(settled).toBe(0); // nobody goes on before the write is done
    release();
    await Promise.all(waits);
    expect(settled).toBe(4);
  });

  it('an add after a flush started goes into the next one', async () => {
    const flushes: number[][] = [];
    const c = new Coalescer<number>(async (_k, items) => {
      flushes.push([...items]);
    });
    const first = c.add('k', 1);
    await new Promise((r) => setImmediate(r));
    const second = c.add('k', 2);
    await Promise.all([first, second]);
    expect(flushes).toEqual([[1], [2]]);
  });

  it('a failed flush fails every caller that shared it', async () => {
    const c = new Coalescer<number>(async () => {
      throw new Error('READONLY');
    });
    const results = await Promise.allSettled([c.add('k', 1), c.add('k', 2)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    await expect(c.add('k', 3)).rejects.toThrow('READONLY');
  });
});
