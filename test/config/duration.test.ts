import { describe, expect, it } from 'vitest';
import { loadConfig, parseDuration } from '../../src/config.ts';

describe('durations', () => {
  it('parses the units, a space before the unit and bare milliseconds', () => {
    expect(parseDuration('30d')).toBe(30 * 86400e3);
    expect(parseDuration(' 12h ')).toBe(12 * 3600e3);
    expect(parseDuration('10 m')).toBe(600e3);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('250')).toBe(250);
  });

  it('refuses what is not a duration with a reason', () => {
    expect(() => parseDuration('soon')).toThrow('invalid duration "soon"');
    expect(() => parseDuration('0s')).toThrow('must be positive');
    expect(() => parseDuration('5 d d')).toThrow('invalid duration');
  });

  it('refuses a megabyte of text by its length, without scanning it (the old pattern backtracked quadratically)', () => {
    // Digits then spaces then a wrong unit: the shape that made `\s*…\s*…\s*$` try every split of the spaces.
    const huge = `1${' '.repeat(1 << 20)}x`;
    expect(() => parseDuration(huge)).toThrow(/1048578 characters; at most 32/);
    expect(() => loadConfig({ SEALPOST_RETENTION: huge })).toThrow(/retentionMs: invalid duration/);
  });
});

describe('SEALPOST_TRUST_PROXY', () => {
  it('takes a hop count or proxy addresses and CIDRs; unset or 0 trusts none', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ SEALPOST_TRUST_PROXY: '0' }).trustProxy).toBe(false);
    expect(loadConfig({ SEALPOST_TRUST_PROXY: '1' }).trustProxy).toBe(1);
    expect(loadConfig({ SEALPOST_TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(loadConfig({ SEALPOST_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1,fd00::/8,loopback' }).trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', 'loopback']);
  });

  it('refuses "true" (every entry believed) and what is not an address, each with a one-line reason', () => {
    expect(() => loadConfig({ SEALPOST_TRUST_PROXY: 'true' })).toThrow(/would believe every X-Forwarded-For entry/);
    expect(() => loadConfig({ SEALPOST_TRUST_PROXY: '10.0.0.0/8,proxy.example' })).toThrow(/"proxy.example" is neither a hop count nor an IP address/);
    expect(() => loadConfig({ SEALPOST_TRUST_PROXY: '300.1.1.1' })).toThrow(/neither a hop count/);
  });
});

describe('shard drains and the lease', () => {
  it('default to 4 conversations a shard job and a 15 s lease, and refuse values out of range with the setting named', () => {
    expect(loadConfig({}).shardDrains).toBe(4);
    expect(loadConfig({}).leaseMs).toBe(15_000);
    expect(loadConfig({ SEALPOST_SHARD_DRAINS: '1', SEALPOST_LEASE_MS: '3000' })).toMatchObject({ shardDrains: 1, leaseMs: 3000 });
    expect(() => loadConfig({ SEALPOST_SHARD_DRAINS: '0' })).toThrow(/shardDrains/);
    expect(() => loadConfig({ SEALPOST_LEASE_MS: '10' })).toThrow(/leaseMs/);
  });
});
