import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeTraceEntry, encodeTraceChunk } from '../../src/trace/store.ts';

const recorded = readFileSync(new URL('./session-repair.jsonl', import.meta.url), 'utf8').trim().split('\n');
const conv = (JSON.parse(recorded[0]!) as { conversation_id: string }).conversation_id;

describe('trace storage', () => {
  it('gives back exactly the lines of a step, in order', () => {
    const chunk = encodeTraceChunk(conv, recorded.slice(0, 4));
    expect(decodeTraceEntry(conv, chunk)).toEqual(recorded.slice(0, 4));
  });

  it('stores a recorded trace in a fraction of its JSON size', () => {
    let packed = 0;
    for (let i = 0; i < recorded.length; i += 3) packed += encodeTraceChunk(conv, recorded.slice(i, i + 3)).length;
    const raw = recorded.reduce((n, l) => n + Buffer.byteLength(l), 0);
    expect(packed * 3).toBeLessThan(raw);
  });

  it('reads a plain line written before chunks', () => {
    expect(decodeTraceEntry(conv, Buffer.from(recorded[0]!))).toEqual([recorded[0]]);
  });
});
