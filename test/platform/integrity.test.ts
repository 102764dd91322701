import { describe, expect, it } from 'vitest';
import { Integrity, type IntegrityChange } from '../../src/platform/integrity.ts';

const HOUR = 3_600_000;

/** The transport's integrity rules alone, on a clock the test moves. */
function setup() {
  let now = 1_000_000;
  const changes: IntegrityChange[] = [];
  const integrity = new Integrity(() => now, (c) => changes.push(c));
  integrity.settings = { ...integrity.settings, tiers: [4, 8, 16, 32] };
  return { integrity, changes, advance: (ms: number) => { now += ms; } };
}

describe('platform integrity rules', () => {
  it('limits distinct users reached outside the window per 24 h, not users inside it or already reached, nor retransmitted copies', () => {
    const { integrity, advance } = setup();
    for (let i = 1; i <= 4; i++) expect(integrity.decide(`m${i}`, 'biz', `u${i}`)).toBeNull();
    expect(integrity.decide('m5', 'biz', 'u5')).toBe('spam_limit');
    // A retransmitted copy of a refused envelope: the same answer, and not counted twice.
    expect(integrity.decide('m5', 'biz', 'u5')).toBe('spam_limit');
    expect(integrity.decide('m6', 'biz', 'u1')).toBeNull(); // already reached today
    integrity.inbound('biz', 'u9');
    expect(integrity.decide('m7', 'biz', 'u9')).toBeNull(); // the user wrote: inside the window
    advance(25 * HOUR);
    expect(integrity.decide('m8', 'biz', 'u5')).toBeNull(); // a new day
  });

  it('moves a number up a tier when it used half its limit in 7 days, at most once per 6 hours, not while RED', () => {
    const { integrity, changes, advance } = setup();
    integrity.decide('a', 'biz', 'u1');
    integrity.decide('b', 'biz', 'u2');
    integrity.decide('c', 'biz', 'u3');
    expect(integrity.standing('biz').current_limit).toBe('TIER_250');
    advance(6 * HOUR);
    integrity.decide('d', 'biz', 'u4');
    expect(changes.at(-1)).toMatchObject({ event: 'UPGRADE', current_limit: 'TIER_2K' });
    // Right after an upgrade, no second one.
    for (let i = 5; i < 9; i++) integrity.decide(`x${i}`, 'biz', `u${i}`);
    expect(integrity.standing('biz').current_limit).toBe('TIER_2K');
  });

  it('rates quality from reports and blocks among users reached, drops a tier at RED, blocks for policy after enough reports', () => {
    const { integrity, changes } = setup();
    integrity.settings = { ...integrity.settings, tiers: [100, 200, 300, 400], blockAfterReports: 3, upgradeAfterMs: 0 };
    integrity.set('biz', { tier: 1 });
    for (let i = 1; i <= 20; i++) integrity.decide(`m${i}`, 'biz', `u${i}`);
    integrity.block('biz', 'u1'); // 1 of 20 = 5 %: one signal is YELLOW at most
    expect(integrity.standing('biz').quality_rating).toBe('YELLOW');
    expect(changes.at(-1)).toMatchObject({ event: 'FLAGGED', quality_rating: 'YELLOW' });
    integrity.report('biz', 'u2'); // 2 of 20 = 10 %
    expect(integrity.standing('biz')).toMatchObject({ quality_rating: 'RED', current_limit: 'TIER_250' });
    expect(changes.at(-1)).toMatchObject({ event: 'DOWNGRADE' });
    expect(integrity.decide('n1', 'biz', 'new-user')).toBe('spam_limit');
    expect(integrity.decide('n2', 'biz', 'u1')).toBe('user_blocked');
    integrity.report('biz', 'u3');
    integrity.report('biz', 'u4');
    expect(changes.at(-1)).toMatchObject({ event: 'BLOCKED', blocked: true });
    expect(integrity.decide('n3', 'biz', 'u5')).toBe('policy_blocked');
    // A policy block applies to copies accepted before it, too.
    expect(integrity.decide('m5', 'biz', 'u5')).toBe('policy_blocked');
    // Nothing in a change names a user.
    expect(JSON.stringify(changes)).not.toMatch(/u\d/);
  });

  it('limits how many numbers may start a conversation with one user per day (131049)', () => {
    const { integrity } = setup();
    integrity.settings = { ...integrity.settings, perUserDaily: 2 };
    expect(integrity.decide('a', 'biz1', 'u')).toBeNull();
    expect(integrity.decide('b', 'biz2', 'u')).toBeNull();
    expect(integrity.decide('c', 'biz3', 'u')).toBe('ecosystem_limit');
    expect(integrity.decide('d', 'biz1', 'u')).toBeNull(); // biz1 already has a conversation with u today
  });
});
