import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStoreRefusal, redisSettingsWarnings } from '../../src/redis/health.ts';
import { startOwnRedisServer, type OwnRedis } from '../helpers/redis-server.ts';
import { createDevice, deviceMessages, openWindows, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';

/**
 * Redis refusing writes (maxmemory reached under noeviction): the API answers 503 with the Cloud API's
 * service-unavailable code and Retry-After, keeps nothing of the refused request, and every message it did
 * accept is delivered once memory is freed. At start and on /readyz the router names Redis settings that put
 * data at risk. On a redis-server of the test's own, since it fills it and changes its settings.
 */
describe('when Redis is full, and when its settings put data at risk', () => {
  let server: OwnRedis;
  let sys: TestSystem;
  let admin: Redis;
  beforeAll(async () => {
    server = await startOwnRedisServer();
    sys = await startSystem({ redisUrl: server.url });
    admin = new Redis(server.url);
  });
  afterAll(async () => {
    admin?.disconnect();
    await sys?.close();
    await server?.stop();
  });

  const send = (to: string, body: string) => fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
    method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messaging_product: 'whatsapp', to, type: 'text', text: { body } }),
  });

  it('answers 503 / 131016 with Retry-After while Redis refuses writes, and delivers everything it accepted once it has room', async () => {
    const user = await createDevice(sys.platformUrl, '+15557300001');
    await openWindows(sys, [user]);
    const before = await send(user, 'accepted before');
    expect(before.status).toBe(200);
    const accepted = [((await before.json()) as { messages: { id: string }[] }).messages[0]!.id];

    // Memory full: Redis keeps what it has and refuses new writes (noeviction). The limit is set far below
    // what Redis holds, so no deletion elsewhere in the system (a finished job, a drained mailbox) makes room.
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    const full = await admin.set(`${sys.prefix}:probe`, 'x').then(() => null, (e: unknown) => e);
    expect(isStoreRefusal(full)).toBe(true);
    expect(String((full as Error).message)).toMatch(/^OOM/);
    const refused = await send(user, 'refused while full');
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const err = ((await refused.json()) as { error: { code: number; message: string; error_data: { details: string } } }).error;
    expect(err.code).toBe(131016);
    expect(err.message).toBe('(#131016) Service temporarily unavailable');
    expect(err.error_data.details).toMatch(/nothing was kept/);

    // Memory freed: what was accepted is delivered, and sending works again.
    await admin.config('SET', 'maxmemory', '0');
    const after = await send(user, 'accepted after');
    expect(after.status).toBe(200);
    accepted.push(((await after.json()) as { messages: { id: string }[] }).messages[0]!.id);
    await waitFor(async () => (await deviceMessages(sys.platformUrl, user)).length >= 2, 'both accepted messages delivered');
    const shown = await deviceMessages(sys.platformUrl, user);
    expect(shown.map((m) => m.id)).toEqual(accepted);
    expect(shown.map((m) => m.text?.body)).not.toContain('refused while full');
  }, 60_000);

  it('names no persistence and an evicting policy as warnings, on /readyz as at start', async () => {
    const readyz = async () => (await (await fetch(`${sys.apiUrl}/readyz`)).json()) as { ready: boolean; warnings: string[] };
    // This server has AOF on and noeviction: nothing to say.
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    expect((await readyz()).warnings).toEqual([]);
    await admin.config('SET', 'appendonly', 'no');
    await admin.config('SET', 'save', '');
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    const { ready, warnings } = await readyz();
    expect(ready).toBe(true);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/persists nothing.*restart loses every accepted message/);
    expect(warnings[1]).toMatch(/maxmemory-policy is allkeys-lru.*set noeviction/);
    expect(await redisSettingsWarnings(sys.ctx.redis)).toEqual(warnings);
    // RDB save points alone are persistence.
    await admin.config('SET', 'save', '3600 1');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    expect((await readyz()).warnings).toEqual([]);
  });
});
