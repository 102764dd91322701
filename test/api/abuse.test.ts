import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';

/**
 * Abuse of the API itself: a client flooding bad tokens or oversized bodies is throttled (429, Graph code 4,
 * Retry-After) without its tokens being looked up, while another client's business keeps sending.
 */
describe('abuse of the API: bad tokens and oversized bodies', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_ABUSE_LIMIT: '10', SEALPOST_ABUSE_WINDOW: '30s', SEALPOST_TRUST_PROXY: '1' } });
  });
  afterAll(async () => sys?.close());

  const send = (from: string, token: string, body: unknown = {}) => fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-forwarded-for': from }, body: JSON.stringify(body),
  });
  const template = (to: string) => ({ messaging_product: 'whatsapp', to, type: 'template', template: { name: 'welcome', language: { code: 'en_US' } } });

  it('throttles a client after 10 bad tokens; another client sends and is delivered meanwhile', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557800001');
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await send('203.0.113.9', `EAASbad${i}`, template(wa))).status);
    expect(statuses).toEqual(Array(10).fill(401));
    // Strikes are counted asynchronously after each answer: the next requests are refused at once.
    await waitFor(async () => (await send('203.0.113.9', 'EAASbad', template(wa))).status === 429, 'throttled');
    const throttled = await send('203.0.113.9', sys.business.access_token, template(wa));
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await throttled.json()) as { error: { code: number; type: string } }).error).toMatchObject({ code: 4, type: 'OAuthException' });

    const ok = await send('198.51.100.7', sys.business.access_token, template(wa));
    expect(ok.status).toBe(200);
    const wamid = ((await ok.json()) as { messages: { id: string }[] }).messages[0]!.id;
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'the other client\'s message delivered');
  }, 60_000);

  it('counts oversized bodies (413, Graph envelope) as strikes too', async () => {
    const big = { messaging_product: 'whatsapp', to: '15550001111', type: 'text', text: { body: 'x'.repeat(1_100_000) } };
    const res = await send('192.0.2.44', sys.business.access_token, big);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(100);
    for (let i = 0; i < 9; i++) await send('192.0.2.44', sys.business.access_token, big);
    await waitFor(async () => (await send('192.0.2.44', sys.business.access_token, template('15550001111'))).status === 429, 'throttled after oversized bodies');
  }, 60_000);

  it('believes one proxy hop only: a client rotating the left-most X-Forwarded-For entry is still throttled', async () => {
    // Behind one proxy, the proxy appends the address it saw; what stands left of it is the client's to write.
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await send(`10.9.${i}.1, 203.0.113.77`, `EAASspoof${i}`)).status);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(401));
    await waitFor(async () => (await send('10.99.99.99, 203.0.113.77', sys.business.access_token)).status === 429, 'the spoofing client throttled');
    // ...and the address it wrote on the left is not blamed: a backend there is not blocked.
    expect((await send('10.9.0.1', sys.business.access_token, template('15550001112'))).status).toBe(200);
  }, 60_000);

  it('counts bad admin tokens on the queue board too, and bad session cookies', async () => {
    const board = (from: string, headers: Record<string, string>) => fetch(`${sys.apiUrl}/admin/queues/api/queues`, { headers: { 'x-forwarded-for': from, ...headers } });
    for (let i = 0; i < 10; i++) expect((await board('203.0.113.120', { authorization: `Bearer wrong-admin-token-${i}` })).status).toBe(401);
    await waitFor(async () => (await board('203.0.113.120', { authorization: 'Bearer wrong-admin-token' })).status === 429, 'the board refusing the guesser');
    // Even the right token waits out the window from that address; another address gets in.
    expect((await board('203.0.113.120', { authorization: `Bearer ${sys.adminToken}` })).status).toBe(429);
    expect((await board('203.0.113.121', { authorization: `Bearer ${sys.adminToken}` })).status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await board('203.0.113.122', { cookie: `sealpost_admin=${1_800_000_000 + i}.${'A'.repeat(43)}` })).status).toBe(401);
    await waitFor(async () => (await board('203.0.113.122', {})).status === 429, 'the cookie guesser refused');
  }, 60_000);

  it('never counts valid requests: a busy client with a good token is not throttled', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557800002');
    for (let i = 0; i < 30; i++) expect((await send('198.51.100.8', sys.business.access_token, template(wa))).status).toBe(200);
  }, 60_000);
});

describe('abuse of the API behind proxies named by address', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_ABUSE_LIMIT: '5', SEALPOST_ABUSE_WINDOW: '30s', SEALPOST_TRUST_PROXY: '127.0.0.0/8, 10.0.0.0/8' } });
  });
  afterAll(async () => sys?.close());

  const bad = (xff: string) => fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
    method: 'POST', headers: { authorization: 'Bearer EAASwrong', 'content-type': 'application/json', 'x-forwarded-for': xff }, body: '{}',
  });

  it('the client is the first address from the right that is not a trusted proxy, whatever stands left of it', async () => {
    // Two proxies (10.1.2.3 and the loopback socket) in front: 198.51.100.50 is the client, the rest is its own writing.
    for (let i = 0; i < 5; i++) expect((await bad(`192.0.2.${i}, 198.51.100.50, 10.1.2.3`)).status).toBe(401);
    await waitFor(async () => (await bad('192.0.2.200, 198.51.100.50, 10.1.2.3')).status === 429, 'the client behind both proxies throttled');
    expect((await bad('198.51.100.51, 10.1.2.3')).status).toBe(401);
  }, 60_000);
});
