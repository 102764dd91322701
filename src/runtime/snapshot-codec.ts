import { inflateRawSync } from 'node:zlib';
import type { Redis } from 'ioredis';
import { open, openBinary, sealBinary } from '../store/sealer.ts';
import { deflateSmall } from '../store/small-deflate.ts';

/**
 * How a conversation's persisted machine snapshot is stored: its JSON raw-deflated against a dictionary of
 * what every snapshot repeats (the shape, the settings, the conversation id), then sealed (AES-256-GCM) as
 * raw bytes in a plain string key. A snapshot is ~370 bytes of JSON; stored this way ~110 bytes, in a key
 * Redis keeps without a hash table's overhead (the version and trace sequence live in the meta hash).
 * Measured by `bench` (`redis_bytes_by_kind.snap`).
 */
const FORMAT = 0x01;

const TEMPLATE = [
  '{"status":"active","value":"negotiating","value":"noSession","value":"expired","historyValue":{},"children":{}}',
  '"state":"queued","state":"encrypting","state":"encrypted","state":"sending","state":"sent","state":"delivered","state":"read"',
  ',"acceptedAt":,"expiresAt":,"attempts":,"nextAttemptAt":null,"nextAttemptAt":,"sentReported":false,"sentReported":true,"repairs":,"skip":true,"read":[',
  '"timer":{"id":"rt:","at":',
  '"settings":{"retryBaseMs":200,"retransmitBaseMs":5000,"retransmitMaxMs":900000,"ttlMs":2592000000,"retentionMs":2592000000}},"children":{}}',
  '"nextSeq":,"messages":[{"wamid":"wamid.","seq":',
  '"messages":[],"bundleFailures":0,"timer":null,"lastInboundAt":null,"lastInboundAt":,"retentionUntil":null,"retentionUntil":,',
].join('');

const dictionaries = new Map<string, Buffer>();

function dictionaryOf(conversationId: string): Buffer {
  let d = dictionaries.get(conversationId);
  if (!d) {
    d = Buffer.from(`${TEMPLATE}{"status":"active","value":"established","historyValue":{},"context":{"conversationId":"${conversationId}",`);
    if (dictionaries.size > 10_000) dictionaries.clear();
    dictionaries.set(conversationId, d);
  }
  return d;
}

/** The stored form of a persisted snapshot (`aad` binds it to its key). */
export function encodeSnapshot(key: Buffer, conversationId: string, persisted: unknown, aad: string): Buffer {
  const packed = deflateSmall(JSON.stringify(persisted), dictionaryOf(conversationId));
  return sealBinary(key, Buffer.concat([Buffer.of(FORMAT), packed]), aad);
}

/** The persisted snapshot from its stored form. */
export function decodeSnapshot(key: Buffer, conversationId: string, stored: Buffer, aad: string): unknown {
  const raw = openBinary(key, stored, aad);
  if (raw[0] !== FORMAT) throw new Error(`unknown snapshot format ${raw[0]}`);
  return JSON.parse(inflateRawSync(raw.subarray(1), { dictionary: dictionaryOf(conversationId) }).toString('utf8'));
}

/**
 * A conversation's persisted snapshot as stored at `key` (either form: the sealed string, or the hash
 * written before), opened with the business's data key; null when there is none.
 */
export async function readPersistedSnapshot(redis: Redis, key: string, dk: Buffer, conversationId: string): Promise<unknown | null> {
  const aad = `${key}:s`;
  try {
    const raw = await redis.getBuffer(key);
    return raw ? decodeSnapshot(dk, conversationId, raw, aad) : null;
  } catch (e) {
    if (!String((e as Error).message).startsWith('WRONGTYPE')) throw e;
    const s = await redis.hget(key, 's');
    return s ? JSON.parse(open(dk, s, aad).toString()) : null;
  }
}
