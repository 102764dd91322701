/**
 * Test side of the platform protocol: a minimal "business" that does what the router does, over HTTP
 * (`app.inject`), with real libsignal and in-memory stores.
 */
import { randomBytes } from 'node:crypto';
import {
  CiphertextMessageType,
  PreKeySignalMessage,
  ProtocolAddress,
  SignalMessage,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import type { QueuedEvent } from '../../src/platform/events.ts';
import { buildPlatform, type Platform } from '../../src/platform/server.ts';
import type { PlatformOptions } from '../../src/platform/state.ts';
import { createLogger } from '../../src/log.ts';
import { PartyStores } from '../../src/platform/device-stores.ts';
import { bundleFromWire, keyUploadFromRecords, keyUploadToWire, type KeyUploadWire } from '../../src/signal/bundle.ts';
import { decodeContent, encodeContent, type Content, type MessageContent } from '../../src/signal/content.ts';
import { generateKeys, type GeneratedKeys } from '../../src/signal/prekeys.ts';

/** A platform for one test, logging nothing. */
export function quietPlatform(opts: PlatformOptions = {}): Platform {
  return buildPlatform({ logger: createLogger('platform-test', 'silent'), ...opts });
}

/** An HTTP answer, parsed. */
export interface Answer<T = any> {
  status: number;
  json: T;
}

/** Calls the platform in-process. */
export async function call<T = any>(app: FastifyInstance, method: 'GET' | 'POST' | 'PUT', url: string, body?: unknown): Promise<Answer<T>> {
  const res = await app.inject({ method, url, ...(body === undefined ? {} : { payload: body as object }) });
  return { status: res.statusCode, json: res.body ? (res.json() as T) : (undefined as T) };
}

/** Registers a device and returns its wa_id. */
export async function registerDevice(app: FastifyInstance, phone: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await call<{ wa_id: string }>(app, 'POST', '/sim/devices', { phone, ...extra });
  expect(r.status).toBe(200);
  return r.json.wa_id;
}

/** Pulls (no wait) and acknowledges everything ready. */
export async function drainEvents(app: FastifyInstance): Promise<QueuedEvent[]> {
  const r = await call<{ events: QueuedEvent[] }>(app, 'POST', '/v1/events/pull', { max: 1000, wait_ms: 0 });
  expect(r.status).toBe(200);
  const events = r.json.events;
  if (events.length > 0) await call(app, 'POST', '/v1/events/ack', { event_ids: events.map((e) => e.event_id) });
  return events;
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const bytes = (s: string): Uint8Array<ArrayBuffer> => new Uint8Array(Buffer.from(s, 'base64'));

/** A wire envelope the business posts. */
export interface WireEnvelope {
  id: string;
  from: string;
  to: string;
  type: number;
  body: string;
}

/** The business role: its own keys, sessions with devices, and a sequence counter per device. */
export class TestBusiness {
  readonly address: ProtocolAddress;
  keys: GeneratedKeys;
  stores: PartyStores;
  private readonly seq = new Map<string, number>();
  private n = 0;

  constructor(readonly name: string, oneTime = 5) {
    this.address = ProtocolAddress.new(name, 1);
    this.keys = generateKeys({ oneTime });
    this.stores = new PartyStores(this.keys);
  }

  /** The `PUT /v1/keys/:address` body publishing this business's bundle. */
  upload(): KeyUploadWire {
    return keyUploadToWire(keyUploadFromRecords(this.keys));
  }

  /** Fetches the device's bundle over HTTP and builds a session (PQXDH). */
  async startSession(app: FastifyInstance, waId: string): Promise<void> {
    const r = await call(app, 'GET', `/v1/keys/${waId}`);
    expect(r.status).toBe(200);
    await processPreKeyBundle(bundleFromWire(r.json), this.device(waId), this.address, this.stores.sessions, this.stores.identities);
  }

  /** Encrypts a text message with the next seq for that device; returns the envelope to post. */
  async text(waId: string, body: string, opts: { seq?: number; id?: string } = {}): Promise<WireEnvelope> {
    const seq = opts.seq ?? (this.seq.get(waId) ?? 0) + 1;
    this.seq.set(waId, Math.max(seq, this.seq.get(waId) ?? 0));
    const id = opts.id ?? `wamid.test-${randomBytes(6).toString('hex')}-${++this.n}`;
    const content: MessageContent = {
      v: 1, kind: 'message', id, seq, from: this.name, timestamp: String(Math.floor(Date.now() / 1000)),
      message: { type: 'text', text: { body } },
    };
    return this.envelope(waId, id, content);
  }

  /** Encrypts any content as an envelope with the given id. */
  async envelope(waId: string, id: string, content: Content): Promise<WireEnvelope> {
    const ct = await signalEncrypt(new Uint8Array(encodeContent(content)), this.device(waId), this.address, this.stores.sessions, this.stores.identities);
    return { id, from: this.name, to: waId, type: ct.type(), body: b64(ct.serialize()) };
  }

  /** Decrypts an `envelope` event from a device. */
  async decrypt(event: { from: string; type: number; body: string }): Promise<Content> {
    const s = this.stores;
    const remote = this.device(event.from);
    const pt =
      event.type === CiphertextMessageType.PreKey
        ? await signalDecryptPreKey(PreKeySignalMessage.deserialize(bytes(event.body)), remote, this.address,
            s.sessions, s.identities, s.preKeys, s.signedPreKeys, s.kyberPreKeys)
        : await signalDecrypt(SignalMessage.deserialize(bytes(event.body)), remote, this.address, s.sessions, s.identities);
    return decodeContent(pt);
  }

  /** The libsignal address of a device. */
  device(waId: string): ProtocolAddress {
    return ProtocolAddress.new(waId, 1);
  }
}

/** A seeded PRNG (mulberry32) for deterministic faults. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
