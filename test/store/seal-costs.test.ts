import { inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeSnapshot, encodeSnapshot } from '../../src/runtime/snapshot-codec.ts';
import { nextIv, open, seal } from '../../src/store/sealer.ts';
import { deflateSmall, SMALL_INPUT } from '../../src/store/small-deflate.ts';
import { decodeTraceEntry, encodeTraceChunk } from '../../src/trace/store.ts';

const dictionary = Buffer.from('{"state":"queued","state":"sent","state":"delivered","wamid":"wamid.'.repeat(40));

describe('deflateSmall', () => {
  it('round-trips small and large inputs through the default inflater, with the dictionary', () => {
    for (const size of [0, 10, 400, SMALL_INPUT, SMALL_INPUT + 1, 40_000]) {
      const input = Array.from({ length: size }, (_, i) => '{"state":"sent","wamid":"wamid.x'[i % 31]).join('') + 'é'.repeat(size % 3);
      const packed = deflateSmall(input, dictionary);
      expect(inflateRawSync(packed, { dictionary }).toString()).toBe(input);
    }
  });

  it('uses the dictionary (a dictionary-shaped input shrinks far below its size)', () => {
    const input = '{"state":"delivered","wamid":"wamid.'.repeat(8);
    expect(deflateSmall(input, dictionary).length).toBeLessThan(input.length / 5);
  });

  it('snapshots and trace chunks round-trip through their codecs', () => {
    const persisted = { status: 'active', value: 'established', context: { conversationId: 'c1', messages: [] } };
    const key = Buffer.alloc(32, 7);
    const fresh = encodeSnapshot(key, 'c1', persisted, 'k:s');
    expect(decodeSnapshot(key, 'c1', fresh, 'k:s')).toEqual(persisted);
    const lines = ['{"conversation_id":"c1","seq":1,"state":"established"}', '{"conversation_id":"c1","seq":2}'];
    expect(decodeTraceEntry('c1', encodeTraceChunk('c1', lines))).toEqual(lines);
  });
});

describe('IV pool', () => {
  it('hands out distinct IVs across refills, each its own buffer', () => {
    const seen = new Set<string>();
    const ivs: Buffer[] = [];
    for (let i = 0; i < 2000; i++) {
      const iv = nextIv();
      expect(iv.length).toBe(12);
      seen.add(iv.toString('hex'));
      ivs.push(iv);
    }
    expect(seen.size).toBe(2000);
    const copy = Buffer.from(ivs[0]!);
    ivs[1]!.fill(0);
    expect(ivs[0]!.equals(copy)).toBe(true);
    // Not views of one pool: writing one leaves the rest alone.
    expect(ivs[0]!.buffer === ivs[1]!.buffer && ivs[0]!.byteOffset === ivs[1]!.byteOffset).toBe(false);
  });

  it('seals the same plaintext differently each time, and opens both', () => {
    const key = Buffer.alloc(32, 3);
    const a = seal(key, 'canary', 'k');
    const b = seal(key, 'canary', 'k');
    expect(a).not.toBe(b);
    expect(open(key, a, 'k').toString()).toBe('canary');
    expect(open(key, b, 'k').toString()).toBe('canary');
  });
});
