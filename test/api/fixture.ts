import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, expect } from 'vitest';
import { buildApp } from '../../src/api/app.ts';
import type { OutboundPort, OutboundRequest } from '../../src/runtime/ports.ts';
import { BusinessStore, type CreatedBusiness } from '../../src/store/businesses.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** The one message id the recording runtime claims the business received (mark-as-read succeeds for it). */
export const KNOWN_INBOUND = 'wamid.KNOWN';

/** A recording stand-in for the runtime: the API tests check what reaches it, and that bad input never does. */
export class RecordingOutbound implements OutboundPort {
  calls: OutboundRequest[] = [];
  reads: { businessId: string; phoneNumberId: string; messageId: string }[] = [];
  /** When set, `accept` throws it (the runtime failing in a way the API did not expect). */
  failWith: unknown = undefined;

  async accept(req: OutboundRequest) {
    if (this.failWith !== undefined) throw this.failWith;
    this.calls.push(req);
    return { wamid: `wamid.TEST${this.calls.length}`, waId: req.waId };
  }

  async markRead(businessId: string, phoneNumberId: string, messageId: string) {
    this.reads.push({ businessId, phoneNumberId, messageId });
    return messageId === KNOWN_INBOUND;
  }
}

/** The API over a real BusinessStore on real Redis (its own prefix), two businesses, and a log capture. */
export interface ApiFixture {
  app: FastifyInstance;
  outbound: RecordingOutbound;
  /** Business A (the one the helpers act as) and business B (the neighbour it must not reach). */
  a: CreatedBusiness;
  b: CreatedBusiness;
  /** Every log line the API wrote since the last test started. */
  logs: string[];
  /** POSTs to A's messages endpoint as A, unless told otherwise. */
  post(body: unknown, opts?: { token?: string | null; path?: string; raw?: string; contentType?: string | null }): Promise<LightMyRequestResponse>;
  /** GETs `url` as A, unless told otherwise. */
  get(url: string, token?: string | null): Promise<LightMyRequestResponse>;
}

/** A valid text send to `+1 (555) 123-4567`, with extra fields merged in. */
export const text = (body: string, extra: Record<string, unknown> = {}) =>
  ({ messaging_product: 'whatsapp', recipient_type: 'individual', to: '+1 (555) 123-4567', type: 'text', text: { body }, ...extra });

/** Registers the fixture's hooks in the calling `describe` and returns it (filled in by `beforeAll`). */
export function useApi(): ApiFixture {
  const f = { outbound: new RecordingOutbound(), logs: [] as string[] } as ApiFixture;
  let redis: Redis;
  let prefix: string;

  beforeAll(async () => {
    prefix = testPrefix('api');
    redis = new Redis(testRedisUrl());
    const keys = new Keys(prefix);
    const businesses = new BusinessStore(redis, keys, new DataKeys(redis, keys, randomBytes(32)));
    f.a = await businesses.create({ name: 'A', webhookUrl: 'http://127.0.0.1:9/a', appSecret: 'secret-a-1', verifyToken: 'va' });
    f.b = await businesses.create({ name: 'B', webhookUrl: 'http://127.0.0.1:9/b', appSecret: 'secret-b-1', verifyToken: 'vb' });
    const capture = new Writable({
      write(chunk, _enc, cb) {
        f.logs.push(String(chunk));
        cb();
      },
    });
    f.app = buildApp({ businesses, outbound: f.outbound, logger: pino({ level: 'debug' }, capture) });
    f.post = (body, opts = {}) =>
      f.app.inject({
        method: 'POST',
        url: opts.path ?? `/v23.0/${f.a.phone_number_id}/messages`,
        headers: {
          ...(opts.contentType === null ? {} : { 'content-type': opts.contentType ?? 'application/json' }),
          ...(opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? f.a.access_token}` }),
        },
        payload: opts.raw ?? JSON.stringify(body),
      });
    f.get = (url, token) =>
      f.app.inject({ method: 'GET', url, headers: token === null ? {} : { authorization: `Bearer ${token ?? f.a.access_token}` } });
  });
  afterAll(async () => {
    await f.app?.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis?.disconnect();
  });
  beforeEach(() => {
    f.outbound.calls = [];
    f.outbound.reads = [];
    f.outbound.failWith = undefined;
    f.logs.length = 0;
  });
  return f;
}

/**
 * Asserts the Graph error envelope with `code` and HTTP `status`, and that nothing reached the runtime's
 * send path; returns the envelope's `error` for further checks.
 */
export function expectError(f: ApiFixture, res: LightMyRequestResponse, code: number, status: number) {
  expect(res.statusCode, res.body).toBe(status);
  const e = res.json().error;
  expect(e).toMatchObject({
    code,
    message: expect.stringMatching(new RegExp(`^\\(#${code}\\) \\S`)),
    type: expect.any(String),
    error_data: { messaging_product: 'whatsapp', details: expect.any(String) },
  });
  expect(Object.keys(res.json())).toEqual(['error']);
  expect(Object.keys(e).sort()).toEqual(['code', 'error_data', 'fbtrace_id', 'message', 'type']);
  expect(e.fbtrace_id).toMatch(/^[\w-]{10,}$/);
  expect(f.outbound.calls).toEqual([]);
  return e as { message: string; type: string; code: number; error_data: { messaging_product: string; details: string }; fbtrace_id: string };
}
