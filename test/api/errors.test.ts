import { describe, expect, it } from 'vitest';
import {
  AuthError, BlockedError, BodyTooLargeError, graphEnvelope, InternalError, InvalidParameterError, PairRateLimitError, ReengagementError,
  SpamLimitError, ThroughputError, toGraphError, UnknownObjectError, UnsupportedTypeError,
} from '../../src/runtime/graph-errors.ts';
import { WindowClosedError } from '../../src/runtime/ports.ts';
import { RateLimitedError } from '../../src/runtime/rate-limits.ts';
import { expectError, text, useApi } from './fixture.ts';

describe('the Graph error envelope', () => {
  it('has the Cloud API shape: "(#code) title", type, code, error_data with messaging_product and details, fbtrace_id', () => {
    expect(graphEnvelope(new ThroughputError(), 'Az8or2yhqkZfEZ-_4Qn_Bam')).toEqual({
      error: {
        message: '(#130429) Rate limit hit', type: 'OAuthException', code: 130429,
        error_data: { messaging_product: 'whatsapp', details: 'Cloud API message throughput has been reached.' }, fbtrace_id: 'Az8or2yhqkZfEZ-_4Qn_Bam',
      },
    });
  });

  it('every error class carries its Cloud API code and HTTP status', () => {
    const table: [Error & { code: number; httpStatus: number; type: string }, number, number][] = [
      [new AuthError(), 190, 401], [new InvalidParameterError('x'), 100, 400], [new BodyTooLargeError(), 100, 413],
      [new UnknownObjectError('1', 'POST'), 100, 400], [new UnsupportedTypeError('image'), 131051, 400],
      [new ThroughputError(), 130429, 429], [new PairRateLimitError(), 131056, 429], [new SpamLimitError(), 131048, 400],
      [new BlockedError(), 368, 403], [new ReengagementError(), 131047, 400], [new InternalError(), 131000, 500],
    ];
    for (const [err, code, status] of table) {
      expect([err.code, err.httpStatus, err.message.startsWith(`(#${code}) `)], err.name).toEqual([code, status, true]);
    }
    expect(new AuthError().type).toBe('OAuthException');
    expect(new UnknownObjectError('1', 'GET').type).toBe('GraphMethodException');
  });

  it('maps runtime refusals to their codes and anything unknown to 131000', () => {
    expect(toGraphError(new RateLimitedError('throughput', 10)).graph.code).toBe(130429);
    expect(toGraphError(new RateLimitedError('pair', 6000)).graph.code).toBe(131056);
    expect(toGraphError(new WindowClosedError()).graph.code).toBe(131047);
    expect(toGraphError(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 })).graph).toBeInstanceOf(BodyTooLargeError);
    for (const thrown of [new Error('ECONNREFUSED 10.0.0.7:6379'), new TypeError('x is undefined'), null, undefined, 'a string', 42]) {
      const { graph, unexpected } = toGraphError(thrown);
      expect([graph.code, graph.httpStatus, unexpected]).toEqual([131000, 500, true]);
    }
  });
});

describe('API errors over HTTP', () => {
  const f = useApi();

  it('190 with HTTP 401 for a missing, malformed or unknown token', async () => {
    const missing = expectError(f, await f.post(text('x'), { token: null }), 190, 401);
    expect(missing.type).toBe('OAuthException');
    expectError(f, await f.post(text('x'), { token: 'not-a-token' }), 190, 401);
    expectError(f, await f.post(text('x'), { token: '' }), 190, 401);
    const basic = await f.app.inject({ method: 'POST', url: `/v23.0/${f.a.phone_number_id}/messages`, headers: { authorization: 'Basic abc', 'content-type': 'application/json' }, payload: JSON.stringify(text('x')) });
    expectError(f, basic, 190, 401);
  });

  it("refuses a valid token on another business's number exactly like an unknown number (no probing)", async () => {
    const foreign = expectError(f, await f.post(text('x'), { token: f.b.access_token }), 100, 400);
    const unknown = expectError(f, await f.post(text('x'), { path: '/v23.0/123456789012345/messages' }), 100, 400);
    const nonNumeric = expectError(f, await f.post(text('x'), { path: '/v23.0/abc/messages' }), 100, 400);
    expect(foreign.message).toBe(`(#100) Unsupported post request. Object with ID '${f.a.phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation`);
    const strip = (e: typeof foreign, id: string) => ({ ...e, message: e.message.replace(id, 'ID'), fbtrace_id: '' });
    expect(strip(foreign, f.a.phone_number_id)).toEqual(strip(unknown, '123456789012345'));
    expect(strip(nonNumeric, 'abc')).toEqual(strip(unknown, '123456789012345'));
    // And B's token still works on B's own number.
    expect((await f.post(text('x'), { token: f.b.access_token, path: `/v23.0/${f.b.phone_number_id}/messages` })).statusCode).toBe(200);
    expect(f.outbound.calls.map((c) => c.businessId)).toEqual([f.b.business_id]);
  });

  it('checks the token first, then the number, then the body', async () => {
    const garbage = '{"messaging_product":';
    expectError(f, await f.post(null, { token: 'nope', raw: garbage }), 190, 401);
    expectError(f, await f.post(null, { token: 'nope', raw: garbage, path: `/v23.0/${f.b.phone_number_id}/messages` }), 190, 401);
    expectError(f, await f.post(null, { token: 'nope', raw: 'x'.repeat(5 * 1024 * 1024) }), 190, 401);
    const foreignGarbage = expectError(f, await f.post(null, { token: f.b.access_token, raw: garbage }), 100, 400);
    expect(foreignGarbage.message).toMatch(/^\(#100\) Unsupported post request/);
    const foreignHuge = expectError(f, await f.post(null, { token: f.b.access_token, raw: 'x'.repeat(5 * 1024 * 1024) }), 100, 400);
    expect(foreignHuge.message).toMatch(/^\(#100\) Unsupported post request/);
  });

  it('100 with HTTP 400 for malformed JSON, an empty JSON body and a non-JSON content type', async () => {
    const malformed = expectError(f, await f.post(null, { raw: '{"messaging_product":' }), 100, 400);
    expect(malformed.error_data.details).toMatch(/JSON/);
    expectError(f, await f.post(null, { raw: '{"__proto__":{"x":1}}' }), 100, 400);
    expectError(f, await f.post(null, { raw: '' }), 100, 400);
    const form = expectError(f, await f.post(null, { raw: 'to=1', contentType: 'application/x-www-form-urlencoded' }), 100, 400);
    expect(form.error_data.details).toMatch(/Content-Type/);
    expectError(f, await f.post(null, { raw: JSON.stringify(text('x')), contentType: 'text/plain' }), 100, 400);
    expectError(f, await f.post(null, { raw: JSON.stringify(text('x')), contentType: null }), 100, 400);
  });

  it('413 in the envelope for a 5 MB body', async () => {
    const e = expectError(f, await f.post(text('x'.repeat(5 * 1024 * 1024))), 100, 413);
    expect(e.error_data.details).toBe('request body too large');
  });

  it('unknown routes and API versions answer in the envelope', async () => {
    expectError(f, await f.post(text('x'), { path: `/vX/${f.a.phone_number_id}/messages` }), 100, 400);
    expectError(f, await f.post(text('x'), { path: `/23.0/${f.a.phone_number_id}/messages` }), 100, 400);
    for (const [method, url] of [['DELETE', '/nothing/here'], ['POST', `/v23.0/${f.a.phone_number_id}/media`], ['GET', '/a/b/c/d']] as const) {
      expectError(f, await f.app.inject({ method, url, headers: { authorization: `Bearer ${f.a.access_token}` } }), 100, 404);
    }
  });

  it('131000 with HTTP 500 for an unexpected failure: nothing internal in the answer, the fbtrace_id in the log', async () => {
    f.outbound.failWith = new Error('ECONNREFUSED 10.0.0.7:6379 in OutboundService.accept');
    const res = await f.post(text('x'));
    const e = expectError(f, res, 131000, 500);
    expect(res.body).not.toMatch(/ECONNREFUSED|10\.0\.0\.7|OutboundService|at /);
    const line = f.logs.map((l) => JSON.parse(l)).find((l) => l.fbtrace_id === e.fbtrace_id);
    expect(line).toMatchObject({ level: 50, status: 500, code: 131000, err: expect.stringContaining('ECONNREFUSED') });
  });

  it('healthz answers {"ok":true} without a token', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('{"ok":true}');
  });
});

describe('API request logs', () => {
  const f = useApi();

  it('one line per request: route pattern, status, the fbtrace_id of an error, the recipient masked, never the body', async () => {
    const canary = `canary-${Date.now()}-ünïcödé`;
    const ok = await f.post(text(canary, { to: '+44 20 7946 0958', biz_opaque_callback_data: `${canary}-cb` }));
    expect(ok.statusCode).toBe(200);
    const refused = await f.post(text(canary, { to: '+44 20 7946 0958', messaging_product: 'sms' }));
    const badTo = await f.post(text(canary, { to: '4420794609581234567' }));
    const noToken = await f.post(text(canary), { token: null });

    const lines = f.logs.map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatchObject({ msg: 'request', method: 'POST', route: '/:version/:phone_number_id/messages', status: 200, to: '44********58' });
    expect(lines[0].fbtrace_id).toBeUndefined();
    expect(lines[1]).toMatchObject({ status: 400, code: 100, fbtrace_id: refused.json().error.fbtrace_id });
    expect(lines[2]).toMatchObject({ status: 400, code: 100, fbtrace_id: badTo.json().error.fbtrace_id });
    expect(lines[3]).toMatchObject({ status: 401, code: 190, fbtrace_id: noToken.json().error.fbtrace_id });
    const all = f.logs.join('\n');
    for (const secret of ['canary-', '442079460958', '4420794609581234567', f.a.access_token]) expect(all).not.toContain(secret);
  });
});
