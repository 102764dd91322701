import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { buildPlatform, type Platform } from '../../src/platform/server.ts';
import { createLogger } from '../../src/log.ts';

/** The transport's attachment store: ciphertext kept until its TTL ends, bounded in bytes. */
describe('platform attachments', () => {
  let platform: Platform | undefined;
  afterEach(async () => {
    await platform?.app.close();
    platform = undefined;
  });

  const start = (opts: { attachmentTtlMs?: number; attachmentMaxBytes?: number }, clock: () => number) => {
    platform = buildPlatform({ ...opts, clock, logger: createLogger('attachments-test', 'silent') });
    return platform;
  };
  const put = async (p: Platform, bytes: Buffer) => {
    const res = await p.app.inject({ method: 'PUT', url: '/v1/attachments', headers: { 'content-type': 'application/octet-stream' }, payload: bytes });
    expect(res.statusCode).toBe(200);
    return (res.json() as { pointer: string }).pointer;
  };
  const get = (p: Platform, pointer: string) => p.app.inject({ method: 'GET', url: `/v1/attachments/${pointer}` });

  it('serves a ciphertext until its TTL ends, then answers 404 and no longer holds it', async () => {
    let now = 1_000_000;
    const p = start({ attachmentTtlMs: 60_000 }, () => now);
    const bytes = randomBytes(1000);
    const pointer = await put(p, bytes);
    now += 30_000;
    const later = await put(p, randomBytes(10));
    const res = await get(p, pointer);
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(bytes)).toBe(true);
    now += 30_000;
    expect((await get(p, pointer)).statusCode).toBe(404);
    expect((await get(p, pointer)).json()).toEqual({ error: 'unknown_attachment' });
    // The one stored later is still there, and only its bytes are counted.
    expect((await get(p, later)).statusCode).toBe(200);
    expect(p.state.blobStats()).toEqual({ count: 1, bytes: 10 });
    now += 30_000;
    expect(p.state.blobStats()).toEqual({ count: 0, bytes: 0 });
  });

  it('drops the oldest first when the total passes the byte bound, never the one just stored', async () => {
    const p = start({ attachmentMaxBytes: 2500 }, () => 1_000_000);
    const a = await put(p, randomBytes(1000));
    const b = await put(p, randomBytes(1000));
    const c = await put(p, randomBytes(1000));
    expect((await get(p, a)).statusCode).toBe(404);
    expect((await get(p, b)).statusCode).toBe(200);
    expect((await get(p, c)).statusCode).toBe(200);
    expect(p.state.blobStats()).toEqual({ count: 2, bytes: 2000 });
    const big = await put(p, randomBytes(4000));
    expect((await get(p, big)).statusCode).toBe(200);
    expect(p.state.blobStats()).toEqual({ count: 1, bytes: 4000 });
  });
});
