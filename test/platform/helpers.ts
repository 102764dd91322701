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
export async function call<T = any>(app: FastifyInstance, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown): Promise<Answer<T>> {
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

/** One device's envelope of a multi-device message (`POST /v1/messages`). */
export interface WireDeviceEnvelope {
  device_id: number;
  registration_id: number;
  type: number;
  body: string;
}

/** The business role: its own keys, sessions with devices, and a sequence counter per device. */
export class TestBusiness {
  readonly address: ProtocolAddress;
  keys: GeneratedKeys;
  stores: PartyStores;
  private readonly seq = new Map<string, number>();
  /** The seq a message id got on a device: a message sent again (after a 409 or 410) keeps it, as a router does. */
  private readonly seqOf = new Map<string, number>();
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

  /**
   * Fetches a device's bundle over HTTP and builds a session (PQXDH): the phone's by `GET /v1/keys/{wa_id}`,
   * another device's by `GET /v1/keys/{wa_id}/{device_id}`.
   */
  async startSession(app: FastifyInstance, waId: string, deviceId?: number): Promise<void> {
    const r = await call(app, 'GET', deviceId === undefined ? `/v1/keys/${waId}` : `/v1/keys/${waId}/${deviceId}`);
    expect(r.status).toBe(200);
    await processPreKeyBundle(bundleFromWire(r.json), this.device(waId, deviceId), this.address, this.stores.sessions, this.stores.identities);
  }

  /** Encrypts a text message with the next seq for that device (seq counts per device); returns the envelope to post. */
  async text(waId: string, body: string, opts: { seq?: number; id?: string; device?: number } = {}): Promise<WireEnvelope> {
    const key = `${waId}.${opts.device ?? 1}`;
    const id = opts.id ?? `wamid.test-${randomBytes(6).toString('hex')}-${++this.n}`;
    const seq = opts.seq ?? this.seqOf.get(`${key}:${id}`) ?? (this.seq.get(key) ?? 0) + 1;
    this.seq.set(key, Math.max(seq, this.seq.get(key) ?? 0));
    this.seqOf.set(`${key}:${id}`, seq);
    const content: MessageContent = {
      v: 1, kind: 'message', id, seq, from: this.name, timestamp: String(Math.floor(Date.now() / 1000)),
      message: { type: 'text', text: { body } },
    };
    return this.envelope(waId, id, content, opts.device);
  }

  /** Encrypts any content as an envelope with the given id (to the phone unless `deviceId` says otherwise). */
  async envelope(waId: string, id: string, content: Content, deviceId?: number): Promise<WireEnvelope> {
    const ct = await signalEncrypt(new Uint8Array(encodeContent(content)), this.device(waId, deviceId), this.address, this.stores.sessions, this.stores.identities);
    return { id, from: this.name, to: waId, type: ct.type(), body: b64(ct.serialize()) };
  }

  /**
   * One message to several devices, as the router hands it over (`POST /v1/messages`): the same id, each
   * device's envelope encrypted on its own session with its own seq, and the registration id the session has.
   */
  async message(waId: string, body: string, deviceIds: number[], opts: { id?: string } = {}): Promise<{ id: string; from: string; to: string; envelopes: WireDeviceEnvelope[] }> {
    const id = opts.id ?? `wamid.test-${randomBytes(6).toString('hex')}-${++this.n}`;
    const envelopes: WireDeviceEnvelope[] = [];
    for (const device of deviceIds) {
      const env = await this.text(waId, body, { id, device });
      const session = await this.stores.sessions.getSession(this.device(waId, device));
      envelopes.push({ device_id: device, registration_id: session!.remoteRegistrationId(), type: env.type, body: env.body });
    }
    return { id, from: this.name, to: waId, envelopes };
  }

  /** Decrypts an `envelope` event from a device (its `device_id` names the session; 1 when absent). */
  async decrypt(event: { from: string; device_id?: number; type: number; body: string }): Promise<Content> {
    const s = this.stores;
    const remote = this.device(event.from, event.device_id);
    const pt =
      event.type === CiphertextMessageType.PreKey
        ? await signalDecryptPreKey(PreKeySignalMessage.deserialize(bytes(event.body)), remote, this.address,
            s.sessions, s.identities, s.preKeys, s.signedPreKeys, s.kyberPreKeys)
        : await signalDecrypt(SignalMessage.deserialize(bytes(event.body)), remote, this.address, s.sessions, s.identities);
    return decodeContent(pt);
  }

  /** The libsignal address of a user's device (default the phone, device 1). */
  device(waId: string, deviceId = 1): ProtocolAddress {
    return ProtocolAddress.new(waId, deviceId);
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
