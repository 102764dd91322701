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
