import { inflateRawSync } from 'node:zlib';
import type { Redis } from 'ioredis';
import { deflateSmall } from '../store/small-deflate.ts';

/**
 * How a conversation's trace is kept in Redis: a list with one entry per committed step, each entry the
 * step's JSON Lines compressed (raw deflate with a preset dictionary). Lines are identical to what
 * `sealpost trace` prints; only their storage is compact: a trace line is ~360 bytes of JSON that repeats the
 * conversation id, wamids and command names, and a step's lines compress ~5-8× against a dictionary holding
 * exactly those (measured in `bench`: `redis_bytes_by_kind.trace`).
 *
 * Entries written before this format (one plain JSON line each, starting with `{`) are still read.
 */
const CHUNK = 0x01;

// Strings every trace repeats; the conversation's own id is appended per conversation.
const COMMON = [
  '"state":"negotiating"', '"state":"established"', '"state":"noSession"', '"state":"expired"',
  '{"type":"bundle.fetch"}', '{"type":"message.encrypt","wamid":"wamid.', '{"type":"transport.send","wamid":"wamid.',
  '{"type":"webhook.status","wamid":"wamid.', '"status":"sent","at":', '"status":"delivered","at":', '"status":"read","at":',
  '"status":"failed","at":', '{"type":"timer.cancel","id":"rt:', '{"type":"timer.schedule","id":"rt:', '"event":"RETRANSMIT_DUE"}',
  '{"type":"message.forget","wamid":"wamid.', '{"type":"store.purge","upTo":', '{"type":"envelope.decrypt","id":"',
  '{"type":"webhook.message","id":"', '{"type":"inbound.store","id":"', '"messageType":3', '"messageType":2',
  '"event":{"type":"SEND","wamid":"wamid.', '"event":{"type":"ENCRYPTED","wamid":"wamid.', '"event":{"type":"TRANSPORT_ACCEPTED","wamid":"wamid.',
  '"event":{"type":"DELIVERED","wamid":"wamid.', '"event":{"type":"READ","wamid":"wamid.', '"event":{"type":"RETRANSMIT_DUE","at":',
  '"event":{"type":"BUNDLE_FETCHED","at":', '"event":{"type":"ENVELOPE","id":"', '"event":{"type":"SESSION_ACK","at":',
  '"event":{"type":"MESSAGE_RECEIVED","id":"', '"event":{"type":"PURGE_DUE","at":', '"timerId":"rt:', '"seq":', '"at":', '"commands":[]',
].join('');

const dictionaries = new Map<string, Buffer>();

function dictionaryOf(conversationId: string): Buffer {
  let d = dictionaries.get(conversationId);
  if (!d) {
    // The most frequent string last: deflate reaches the end of the dictionary most cheaply.
    d = Buffer.from(`${COMMON}{"conversation_id":"${conversationId}","seq":`);
    if (dictionaries.size > 10_000) dictionaries.clear();
    dictionaries.set(conversationId, d);
  }
  return d;
}

/** One stored entry holding `lines` (JSON strings, in order). */
export function encodeTraceChunk(conversationId: string, lines: string[]): Buffer {
  const packed = deflateSmall(lines.join('\n'), dictionaryOf(conversationId));
  return Buffer.concat([Buffer.of(CHUNK), packed]);
}

/** The lines of one stored entry (a chunk, or a plain line written before chunks). */
export function decodeTraceEntry(conversationId: string, entry: Buffer): string[] {
  if (entry[0] !== CHUNK) return [entry.toString('utf8')];
  return inflateRawSync(entry.subarray(1), { dictionary: dictionaryOf(conversationId) }).toString('utf8').split('\n');
}

/** The conversation's whole stored trace as JSON Lines strings, oldest first. */
export async function readTraceLines(redis: Redis, key: string, conversationId: string): Promise<string[]> {
  const entries = await redis.lrangeBuffer(key, 0, -1);
  return entries.flatMap((e) => decodeTraceEntry(conversationId, e));
}
