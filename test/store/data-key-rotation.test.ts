import { createCipheriv, randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys, masterKeyId, open, openBinary, seal, sealBinary, sealedVersion, type DataKeyOptions } from '../../src/store/sealer.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** Data key versions: rotation by command and by count, what stays readable, what other processes see. */
describe('data key rotation', () => {
  const redis = new Redis(testRedisUrl());
  const prefix = testPrefix('dkr');
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  let n = 0;
  /** A fresh key space, a master key, a shared clock and a way to make "processes" on them. */
  function world() {
    const keys = new Keys(`${prefix}:${n++}`);
    const master = randomBytes(32);
    const t = { now: 1_000_000 };
    const process = (opts: DataKeyOptions = {}) => new DataKeys(redis, keys, master, 30_000, () => t.now, opts);
    return { keys, master, t, process };
  }

  /** Exactly what the code before key versions wrote: `v1.` text, 0x02 binary, the key as a plain string. */
  function legacySeal(key: Buffer, plaintext: string | Buffer, aad: string, binary: boolean): string | Buffer {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from(aad));
    const body = Buffer.concat([iv, c.update(typeof plaintext === 'string' ? Buffer.from(plaintext) : plaintext), c.final(), c.getAuthTag()]);
    return binary ? Buffer.concat([Buffer.of(0x02), body]) : `v1.${body.toString('base64')}`;
  }

  it('after a rotation old values still open, new ones name the new version, and mac() does not change', async () => {
    const { keys, t, process } = world();
    const admin = process();
    const dk = await admin.create('b');
    const oldText = seal(dk, 'before', 'k:t');
    const oldBin = sealBinary(dk, Buffer.from('before-bin'), 'k:b');
    // Version 1 keeps the formats of before versions, byte for byte in layout.
    expect(oldText).toMatch(/^v1\./);
    expect(oldBin[0]).toBe(0x02);
    const macBefore = await admin.mac('b', 'conv:123');

    const rotated = await admin.rotate('b');
    expect(rotated).toEqual({ version: 2, activeAt: t.now + 40_000 });
    expect(await redis.hget(keys.dataKey('b'), 'cur')).toBe('2');
    // Not sealing with it before it starts: other processes may not know it yet.
    expect(sealedVersion(seal(await admin.get('b'), 'x', 'k'))).toBe(1);
    t.now += 40_000;
    const key = await admin.get('b');
    const newText = seal(key, 'after', 'k:t');
    const newBin = sealBinary(key, Buffer.from('after-bin'), 'k:b');
    expect(newText).toMatch(/^v2\./);
    expect([...newBin.subarray(0, 5)]).toEqual([0x03, 0, 0, 0, 2]);
    expect(sealedVersion(newText)).toBe(2);
    expect(sealedVersion(newBin)).toBe(2);
    for (const k of [key, dk]) {
      expect(open(k, oldText, 'k:t').toString()).toBe('before');
      expect(openBinary(k, oldBin, 'k:b').toString()).toBe('before-bin');
      expect(open(k, newText, 'k:t').toString()).toBe('after');
      expect(openBinary(k, newBin, 'k:b').toString()).toBe('after-bin');
    }
    // A text value stored in a binary field still opens.
    expect(openBinary(key, Buffer.from(newText, 'latin1'), 'k:t').toString()).toBe('after');
    // Moving a value to another key still fails, under any version.
    expect(() => open(key, newText, 'k:other')).toThrow(/authentication/);
    expect(await admin.mac('b', 'conv:123')).toEqual(macBefore);
    // A fresh process (nothing cached) reads every version.
    const fresh = process();
    expect(open(await fresh.get('b'), newText, 'k:t').toString()).toBe('after');
    expect(await fresh.mac('b', 'conv:123')).toEqual(macBefore);
  });

  it('values and a data key stored before key versions still open (as version 1); the first write converts the key', async () => {
    const { keys, master, process } = world();
    const v1 = randomBytes(32);
    const name = keys.dataKey('old');
    // The data key as the previous release stored it: a string, wrapped with the key name as associated data.
    await redis.set(name, `${masterKeyId(master)}:${legacySeal(master, v1, name, false) as string}`);
    const text = legacySeal(v1, 'old text', 'k:t', false) as string;
    const bin = legacySeal(v1, 'old bin', 'k:b', true) as Buffer;
    const a = process();
    const dk = await a.get('old');
    expect(open(dk, text, 'k:t').toString()).toBe('old text');
    expect(openBinary(dk, bin, 'k:b').toString()).toBe('old bin');
    expect(await redis.type(name)).toBe('string');
    await a.rotate('old');
    expect(await redis.type(name)).toBe('hash');
    expect(await redis.hget(name, 'cur')).toBe('2');
    const b = process();
    expect(open(await b.get('old'), text, 'k:t').toString()).toBe('old text');
    expect(openBinary(await b.get('old'), bin, 'k:b').toString()).toBe('old bin');
    // A master key rotation converts and re-wraps a key still in the old form.
    const name2 = keys.dataKey('old2');
    await redis.set(name2, `${masterKeyId(master)}:${legacySeal(master, v1, name2, false) as string}`);
    await redis.sadd(keys.businesses, 'old2');
    const newMaster = randomBytes(32);
    expect(await new DataKeys(redis, keys, [newMaster, master]).rewrapAll()).toBe(1);
    expect(await redis.type(name2)).toBe('hash');
    expect(open(await new DataKeys(redis, keys, newMaster).get('old2'), text, 'k:t').toString()).toBe('old text');
  });

  it('another process learns a new version at its next check and seals with it from its start', async () => {
    const { t, process } = world();
    const admin = process();
    const worker = process();
    await admin.create('b');
    expect(sealedVersion(seal(await worker.get('b'), 'x', 'k'))).toBe(1);
    await admin.rotate('b');
    // Within its period the worker uses what it has; a value under the new version would make it re-read.
    t.now += 29_999;
    expect(sealedVersion(seal(await worker.get('b'), 'x', 'k'))).toBe(1);
    t.now += 2;
    const dk = await worker.get('b');
    // Read at the check, not yet started: the worker opens version 2 but still seals with 1.
    expect(dk.ring.versions()).toEqual([1, 2]);
    expect(sealedVersion(seal(dk, 'x', 'k'))).toBe(1);
    t.now += 10_000;
    expect(sealedVersion(seal(await worker.get('b'), 'x', 'k'))).toBe(2);
    expect(sealedVersion(seal(await admin.get('b'), 'x', 'k'))).toBe(2);
  });

  it('a value under a version a process does not know fails, and the process re-reads the keyring at its next use', async () => {
    const { t, process } = world();
    const a = process({ activationMs: 0 });
    const b = process();
    await a.create('b');
    const stale = await b.get('b');
    await a.rotate('b');
    const sealed = seal(await a.get('b'), 'new', 'k');
    expect(() => open(stale, sealed, 'k')).toThrow(/version 2, which this process does not know yet/);
    // No waiting for the period: the miss made the next get() read again.
    expect(open(await b.get('b'), sealed, 'k').toString()).toBe('new');
    expect(t.now).toBe(1_000_000);
  });

  it('counts seals per version in batches and rotates once when the count passes the threshold, even with processes racing', async () => {
    const { keys, process } = world();
    const rotated: [string, number][] = [];
    const opts = { rotateAfter: 10, flushEvery: 1_000, activationMs: 0, onRotated: (b: string, v: number) => rotated.push([b, v]) };
    const a = process(opts);
    const b = process(opts);
    await a.create('b');
    const [ka, kb] = [await a.get('b'), await b.get('b')];
    for (let i = 0; i < 4; i++) seal(ka, 'x', 'k');
    for (let i = 0; i < 5; i++) sealBinary(kb, Buffer.from('x'), 'k');
    // Counted in process: nothing in Redis until a flush.
    expect(await redis.hget(keys.dataKey('b'), 'n:1')).toBeNull();
    await Promise.all([a.flush(), b.flush()]);
    expect(await redis.hget(keys.dataKey('b'), 'n:1')).toBe('9');
    expect(await redis.hget(keys.dataKey('b'), 'cur')).toBe('1');
    // Both pass the threshold and both flush at once: exactly one new version.
    for (let i = 0; i < 3; i++) seal(ka, 'x', 'k');
    for (let i = 0; i < 3; i++) seal(kb, 'x', 'k');
    await Promise.all([a.flush(), b.flush()]);
    expect(await redis.hget(keys.dataKey('b'), 'n:1')).toBe('15');
    expect(await redis.hget(keys.dataKey('b'), 'cur')).toBe('2');
    expect(rotated).toEqual([['b', 2]]);
    // Version 1 counts on (b still seals with it until its next check), but it has been replaced already.
    seal(kb, 'x', 'k');
    await b.flush();
    expect(await redis.hget(keys.dataKey('b'), 'cur')).toBe('2');
    expect(sealedVersion(seal(ka, 'x', 'k'))).toBe(2);
    await a.flush();
    expect(await redis.hget(keys.dataKey('b'), 'n:2')).toBe('1');
  });

  it('adds counts every N seals without being asked, and on close; never brings back a deleted key', async () => {
    const { keys, process } = world();
    const a = process({ flushEvery: 5 });
    const dk = await a.create('b');
    for (let i = 0; i < 5; i++) seal(dk, 'x', 'k');
    await expect.poll(() => redis.hget(keys.dataKey('b'), 'n:1')).toBe('5');
    seal(dk, 'x', 'k');
    await a.close();
    expect(await redis.hget(keys.dataKey('b'), 'n:1')).toBe('6');
    seal(dk, 'x', 'k');
    await a.destroy('b');
    seal(dk, 'x', 'k');
    await a.flush();
    expect(await redis.exists(keys.dataKey('b'))).toBe(0);
  });

  it('adds counts on a timer every re-check period, and close() still ends after a timed flush', async () => {
    const { keys, master } = world();
    // Real time, a short period: the timer fires during the test.
    const a = new DataKeys(redis, keys, master, 50);
    const dk = await a.create('b');
    seal(dk, 'x', 'k');
    await expect.poll(() => redis.hget(keys.dataKey('b'), 'n:1')).toBe('1');
    seal(dk, 'x', 'k');
    await new Promise((r) => setTimeout(r, 120));
    seal(dk, 'x', 'k');
    await a.close();
    expect(await redis.hget(keys.dataKey('b'), 'n:1')).toBe('3');
  });

  it('master key rotation re-wraps every version', async () => {
    const { keys, master, t } = world();
    const newMaster = randomBytes(32);
    const before = new DataKeys(redis, keys, master, 30_000, () => t.now, { activationMs: 0 });
    await redis.sadd(keys.businesses, 'b');
    await before.create('b');
    await before.rotate('b');
    const sealed = seal(await before.get('b'), 'v2 value', 'k');
    expect(sealedVersion(sealed)).toBe(2);
    const during = new DataKeys(redis, keys, [newMaster, master]);
    expect(await during.rewrapAll()).toBe(2);
    expect(await during.rewrapAll()).toBe(0);
    for (const v of ['1', '2']) expect(await redis.hget(keys.dataKey('b'), v)).toMatch(new RegExp(`^${masterKeyId(newMaster)}:`));
    const after = new DataKeys(redis, keys, newMaster);
    expect(open(await after.get('b'), sealed, 'k').toString()).toBe('v2 value');
  });

  it('rotating a business without a data key is refused', async () => {
    const { process } = world();
    await expect(process().rotate('nobody')).rejects.toThrow(/no data key for business nobody/);
  });

  it('keeps at most maxCached keyrings in memory', async () => {
    const { process } = world();
    const a = process({ maxCached: 3 });
    for (let i = 0; i < 6; i++) await a.create(`b${i}`);
    const cache = (a as unknown as { cache: { size: number } }).cache;
    expect(cache.size).toBe(3);
    // An evicted one is read again when needed.
    expect(await a.get('b0')).toBeInstanceOf(Buffer);
    expect(cache.size).toBe(3);
  });
});
