import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.ts';
import { createLogger } from '../../src/log.ts';
import type { OutboundPort, OutboundRequest } from '../../src/runtime/ports.ts';
import { BusinessStore, type CreatedBusiness } from '../../src/store/businesses.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** A recording stand-in for the runtime: the API tests check what reaches it, and that bad input never does. */
class RecordingOutbound implements OutboundPort {
  calls: OutboundRequest[] = [];
  reads: string[] = [];
  async accept(req: OutboundRequest) {
    this.calls.push(req);
    return { wamid: `wamid.TEST${this.calls.length}`, waId: req.waId };
  }
  async markRead(_b: string, _p: string, id: string) {
    this.reads.push(id);
    return id === 'wamid.KNOWN';
  }
}

describe('Cloud-API-compatible messages endpoint', () => {
  let redis: Redis;
  let prefix: string;
  let app: FastifyInstance;
  let a: CreatedBusiness;
  let b: CreatedBusiness;
  const outbound = new RecordingOutbound();

  beforeAll(async () => {
    prefix = testPrefix('api');
    redis = new Redis(testRedisUrl());
    const keys = new Keys(prefix);
    const businesses = new BusinessStore(redis, keys, new DataKeys(redis, keys, randomBytes(32)));
    a = await businesses.create({ name: 'A', webhookUrl: 'http://127.0.0.1:9/a', appSecret: 'secret-a-1', verifyToken: 'va' });
    b = await businesses.create({ name: 'B', webhookUrl: 'http://127.0.0.1:9/b', appSecret: 'secret-b-1', verifyToken: 'vb' });
    app = buildApp({ businesses, outbound, logger: createLogger('api-test', 'silent') });
  });
  afterAll(async () => {
    await app.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });
  beforeEach(() => {
    outbound.calls = [];
    outbound.reads = [];
  });

  const post = (body: unknown, opts: { token?: string | null; path?: string; raw?: string; contentType?: string } = {}) =>
    app.inject({
      method: 'POST',
      url: opts.path ?? `/v23.0/${a.phone_number_id}/messages`,
      headers: {
        'content-type': opts.contentType ?? 'application/json',
        ...(opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? a.access_token}` }),
      },
      payload: opts.raw ?? JSON.stringify(body),
    });
  const text = (body: string, extra: Record<string, unknown> = {}) => ({ messaging_product: 'whatsapp', recipient_type: 'individual', to: '+1 (555) 123-4567', type: 'text', text: { body }, ...extra });

  /** Asserts the Graph error envelope with `code` and HTTP `status`, and that nothing was accepted. */
  function expectError(res: Awaited<ReturnType<typeof post>>, code: number, status: number) {
    expect(res.statusCode).toBe(status);
    const e = res.json().error;
    expect(e).toMatchObject({ code, message: expect.stringMatching(new RegExp(`^\\(#${code}\\) `)), error_data: { messaging_product: 'whatsapp', details: expect.any(String) } });
    expect(e.fbtrace_id).toMatch(/^[\w-]{10,}$/);
    expect(e.type).toEqual(expect.any(String));
    expect(outbound.calls).toEqual([]);
  }

  it('accepts a text with and without the version segment, answering exactly as the Cloud API', async () => {
    for (const path of [`/v23.0/${a.phone_number_id}/messages`, `/${a.phone_number_id}/messages`]) {
      const res = await post(text('hi', { biz_opaque_callback_data: 'cb', context: { message_id: 'wamid.PREV' } }), { path });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ messaging_product: 'whatsapp', contacts: [{ input: '+1 (555) 123-4567', wa_id: '15551234567' }], messages: [{ id: expect.stringMatching(/^wamid\./) }] });
    }
    expect(outbound.calls).toHaveLength(2);
    expect(outbound.calls[0]).toEqual({
      businessId: a.business_id, phoneNumberId: a.phone_number_id, waId: '15551234567',
      message: { type: 'text', text: { body: 'hi' }, context: { message_id: 'wamid.PREV' } }, bizOpaqueCallbackData: 'cb',
    });
  });

  it('190 for a missing, malformed or unknown token', async () => {
    expectError(await post(text('x'), { token: null }), 190, 401);
    expectError(await post(text('x'), { token: 'not-a-token' }), 190, 401);
    const res = await app.inject({ method: 'POST', url: `/v23.0/${a.phone_number_id}/messages`, headers: { authorization: 'Basic abc', 'content-type': 'application/json' }, payload: '{}' });
    expectError(res, 190, 401);
  });

  it("a valid token on another business's number is refused exactly like an unknown number", async () => {
    const foreign = await post(text('x'), { token: b.access_token });
    expectError(foreign, 100, 400);
    const unknown = await post(text('x'), { path: '/v23.0/123456789012345/messages' });
    expectError(unknown, 100, 400);
    expect(foreign.json().error.message.replace(a.phone_number_id, 'ID')).toBe(unknown.json().error.message.replace('123456789012345', 'ID'));
  });

  it('100 for malformed JSON, a non-JSON body, a wrong messaging_product or an unknown type', async () => {
    expectError(await post(null, { raw: '{"messaging_product":' }), 100, 400);
    expectError(await post(null, { raw: 'to=1', contentType: 'application/x-www-form-urlencoded' }), 100, 400);
    expectError(await post({ ...text('x'), messaging_product: 'telegram' }), 100, 400);
    expectError(await post({ ...text('x'), messaging_product: undefined }), 100, 400);
    expectError(await post({ ...text('x'), type: 'hologram' }), 100, 400);
    expectError(await post({ ...text('x'), recipient_type: 'group' }), 100, 400);
  });

  it('100 for an empty text, a text over 4,096 characters, and a bad preview_url; 4,096 non-ASCII characters pass', async () => {
    expectError(await post(text('')), 100, 400);
    expectError(await post(text('   ')), 100, 400);
    expectError(await post({ ...text('x'), text: undefined }), 100, 400);
    expectError(await post(text('é'.repeat(4097))), 100, 400);
    expectError(await post(text('👋'.repeat(4097))), 100, 400);
    expectError(await post({ ...text('x'), text: { body: 'x', preview_url: 'yes' } }), 100, 400);
    const ok = await post(text('👋'.repeat(4096)));
    expect(ok.statusCode).toBe(200);
  });

  it('100 for an invalid recipient', async () => {
    for (const to of ['', 'abc', '+0123456789', '12345', '+1234567890123456', 42]) {
      expectError(await post({ ...text('x'), to }), 100, 400);
    }
  });

  it('100 for oversized callback data and a context without message_id', async () => {
    expectError(await post(text('x', { biz_opaque_callback_data: 'x'.repeat(513) })), 100, 400);
    expectError(await post(text('x', { context: {} })), 100, 400);
  });

  it('413 with the envelope for an oversize body', async () => {
    const res = await post(text('x'.repeat(5 * 1024 * 1024)));
    expectError(res, 100, 413);
  });

  it('131051 for what Sealpost does not send yet (media by uploaded id), 100 for malformed structured messages', async () => {
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'image', image: { id: '1234567890' } }), 131051, 400);
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'image', image: { link: 'ftp://x/y.png' } }), 100, 400);
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'location', location: { latitude: 91, longitude: 0 } }), 100, 400);
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'interactive', interactive: { type: 'button', body: { text: 'pick' }, action: { buttons: [] } } }), 100, 400);
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'reaction', reaction: { emoji: '👍' } }), 100, 400);
    expectError(await post({ messaging_product: 'whatsapp', to: '15551234567', type: 'contacts', contacts: [{ phones: [] }] }), 100, 400);
  });

  it('marks a message read, and refuses an id the business never received', async () => {
    const ok = await post({ messaging_product: 'whatsapp', status: 'read', message_id: 'wamid.KNOWN' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ success: true });
    expectError(await post({ messaging_product: 'whatsapp', status: 'read', message_id: 'wamid.OTHER' }), 100, 400);
    expectError(await post({ messaging_product: 'whatsapp', status: 'read' }), 100, 400);
  });

  it("GET the phone number answers the number's details, with the same isolation", async () => {
    for (const url of [`/v23.0/${a.phone_number_id}`, `/${a.phone_number_id}`]) {
      const res = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${a.access_token}` } });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ id: a.phone_number_id, display_phone_number: a.display_phone_number, verified_name: 'A', quality_rating: 'GREEN', throughput: { level: 'STANDARD' } });
    }
    const foreign = await app.inject({ method: 'GET', url: `/v23.0/${a.phone_number_id}`, headers: { authorization: `Bearer ${b.access_token}` } });
    expect(foreign.statusCode).toBe(400);
    expect(foreign.json().error.code).toBe(100);
  });

  it('unknown routes and API versions answer in the envelope', async () => {
    expectError(await post(text('x'), { path: `/vX/${a.phone_number_id}/messages` }), 100, 400);
    const res = await app.inject({ method: 'DELETE', url: '/nothing/here' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe(100);
  });
});
