import { deflateRawSync } from 'node:zlib';

/**
 * Raw deflate against a preset dictionary, sized to the input. Snapshots and a step's trace lines are a few
 * hundred bytes; zlib's defaults (a 32 KiB window, memLevel 8) make every call allocate and clear ~400 KiB of
 * state for them, which measured ~28 µs per call against ~20 µs with a 2 KiB window and memLevel 4, for the
 * same output size. Larger inputs (a rewritten trace) keep the defaults and their ratio.
 *
 * What this writes is read by `inflateRawSync` with the default window (15): a decoder with a larger window
 * and the same dictionary reads any smaller window's output (a window smaller than the dictionary uses the
 * dictionary's tail, which sits at the same distances for the decoder).
 */
export function deflateSmall(input: string | Buffer, dictionary: Buffer): Buffer {
  const length = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
  if (length <= SMALL_INPUT) return deflateRawSync(input, { dictionary, level: 6, windowBits: 11, memLevel: 4 });
  return deflateRawSync(input, { dictionary, level: 6 });
}

/** Inputs up to this many bytes get the small window (2 KiB: matches still reach back to any byte of the input). */
export const SMALL_INPUT = 1536;
