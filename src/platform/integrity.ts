/**
 * The transport's integrity rules (the seed: WhatsApp "protects the users by detecting unusual messaging
 * patterns, like a business trying to message all users, or collecting spam reports from users"). The
 * platform sees only ciphertext, phone numbers and times, and that is all these rules use:
 *
 * - **Messaging-limit tier** per business number: how many distinct users it may reach outside the
 *   customer-service window (no message from the user in the last 24 h) in a moving 24 h:
 *   250 → 2,000 → 10,000 → 100,000 → unlimited. A number that used at least half its limit over the last
 *   7 days while its quality is not RED moves one tier up (at most once per 6 h). A new user beyond the
 *   limit: refused, 131048.
 * - **Blocks and spam reports** from users. A user who blocked a number gets nothing from it (refused as
 *   undeliverable, 131026). Reports and blocks, against the distinct users the number reached in the last
 *   7 days, give its **quality rating**: GREEN, YELLOW (≥ 2 %), RED (≥ 5 %), each with a minimum count of
 *   signals. A RED number reaches no new user outside the window (131048); one with `blockAfterReports`
 *   reports or more is **blocked for policy violations**: everything it sends is refused (368).
 * - **Per-user engagement limit** (131049): a user reached outside the window by `perUserDaily` different
 *   numbers in 24 h gets no further business-initiated conversation that day.
 *
 * An envelope carried once is carried again (a retransmitted copy is not counted twice); a refused one is
 * decided afresh on its next copy. A policy block or a user's block applies to every copy.
 */

export const TIERS = [250, 2_000, 10_000, 100_000, Infinity] as const;
export const TIER_NAMES = ['TIER_250', 'TIER_2K', 'TIER_10K', 'TIER_100K', 'TIER_UNLIMITED'] as const;
export type Quality = 'GREEN' | 'YELLOW' | 'RED';

const DAY = 86_400_000;
const WEEK = 7 * DAY;

/** Why the transport refuses an envelope (the router maps each to a Cloud API error code). */
export type Refusal = 'spam_limit' | 'ecosystem_limit' | 'policy_blocked' | 'user_blocked';
export const REFUSAL_CODES: Record<Refusal, number> = { spam_limit: 131048, ecosystem_limit: 131049, policy_blocked: 368, user_blocked: 131026 };

export interface IntegritySettings {
  /** YELLOW at this share of reports and blocks among users reached in 7 days (and `minSignals`). */
  yellowRate: number;
  redRate: number;
  minSignals: number;
  /** Reports that get a number blocked for policy violations. */
  blockAfterReports: number;
  /** Distinct numbers that may start a conversation with one user outside the window per 24 h. */
  perUserDaily: number;
  /** The limits of the first four tiers (the fifth is unlimited); tests and demos shrink them. */
  tiers: number[];
  /** How long after its last tier change a number can move up again (Meta: within 6 h of qualifying). */
  upgradeAfterMs: number;
}

export const DEFAULT_SETTINGS: IntegritySettings = {
  yellowRate: 0.02, redRate: 0.05, minSignals: 2, blockAfterReports: 20, perUserDaily: 10, tiers: [250, 2_000, 10_000, 100_000], upgradeAfterMs: 6 * 3_600_000,
};

/** What the router is told when a number's standing changes (the `phone_number_quality_update` webhook). */
export interface IntegrityChange {
  number: string;
  event: 'FLAGGED' | 'UNFLAGGED' | 'UPGRADE' | 'DOWNGRADE' | 'BLOCKED' | 'UNBLOCKED';
  quality_rating: Quality;
  current_limit: (typeof TIER_NAMES)[number];
  blocked: boolean;
}

interface NumberState {
  tier: number;
  tierSince: number;
  /** User → when the number last started a conversation with them outside the window. */
  reached: Map<string, number>;
  /** User → when they last wrote to the number (opens the window for 24 h). */
  lastInbound: Map<string, number>;
  reports: Map<string, number>;
  blocks: Map<string, number>;
  quality: Quality;
  blocked: boolean;
}

export class Integrity {
  private readonly numbers = new Map<string, NumberState>();
  /** User → number → when that number started a conversation with them outside the window. */
  private readonly perUser = new Map<string, Map<string, number>>();
  private readonly carried = new Set<string>();
  settings: IntegritySettings = { ...DEFAULT_SETTINGS };

  constructor(
    private readonly clock: () => number,
    private readonly onChange: (c: IntegrityChange) => void,
  ) {}

  private state(number: string): NumberState {
    let s = this.numbers.get(number);
    if (!s) {
      s = { tier: 0, tierSince: this.clock(), reached: new Map(), lastInbound: new Map(), reports: new Map(), blocks: new Map(), quality: 'GREEN', blocked: false };
      this.numbers.set(number, s);
    }
    return s;
  }

  /** A user wrote to a business number: its window with them is open for 24 h. */
  inbound(number: string, user: string): void {
    this.state(number).lastInbound.set(user, this.clock());
  }

  /**
   * Decides whether the transport carries envelope `id` from `number` to `user`; null when it does. A policy
   * block or the user's block applies to every copy; limits are decided once per envelope id, so a
   * retransmitted copy is not counted (or refused) again.
   */
  decide(id: string, number: string, user: string): Refusal | null {
    const s = this.state(number);
    if (s.blocked) return 'policy_blocked';
    if (s.blocks.has(user)) return 'user_blocked';
    // An envelope carried once is carried again (its copies are not counted again); a refused one is
    // decided afresh each time (it was not counted, and the number's standing may have changed since).
    if (this.carried.has(id)) return null;
    const verdict = this.evaluate(number, user);
    if (verdict === null) {
      this.carried.add(id);
      if (this.carried.size > 200_000) this.carried.delete(this.carried.values().next().value!);
    }
    return verdict;
  }

  private evaluate(number: string, user: string): Refusal | null {
    const s = this.state(number);
    const now = this.clock();
    const inWindow = now - (s.lastInbound.get(user) ?? -Infinity) < DAY;
    if (inWindow) return null;
    const last = s.reached.get(user);
    if (last !== undefined && now - last < DAY) return null; // a conversation already started today
    // A new business-initiated conversation: the number's limit and quality, then the user's.
    this.maybeUpgrade(number, s, now);
    if (s.quality === 'RED') return 'spam_limit';
    if (this.reachedWithin(s, now, DAY) >= this.limitOf(s.tier)) return 'spam_limit';
    const byNumber = this.perUser.get(user) ?? new Map<string, number>();
    const others = [...byNumber.entries()].filter(([n, t]) => n !== number && now - t < DAY).length;
    if (others >= this.settings.perUserDaily) return 'ecosystem_limit';
    s.reached.set(user, now);
    byNumber.set(number, now);
    this.perUser.set(user, byNumber);
    return null;
  }

  private reachedWithin(s: NumberState, now: number, ms: number): number {
    let n = 0;
    for (const t of s.reached.values()) if (now - t < ms) n++;
    return n;
  }

  private limitOf(tier: number): number {
    return this.settings.tiers[tier] ?? Infinity;
  }

  private maybeUpgrade(number: string, s: NumberState, now: number): void {
    if (s.tier >= TIERS.length - 1 || s.quality === 'RED' || now - s.tierSince < this.settings.upgradeAfterMs) return;
    if (this.reachedWithin(s, now, WEEK) * 2 >= this.limitOf(s.tier)) {
      s.tier++;
      s.tierSince = now;
      this.emit(number, s, 'UPGRADE');
    }
  }

  /** The user reported the number as spam (which also blocks it, as the apps do). */
  report(number: string, user: string): void {
    const s = this.state(number);
    s.reports.set(user, this.clock());
    s.blocks.set(user, this.clock());
    this.rate(number, s);
  }

  block(number: string, user: string): void {
    const s = this.state(number);
    s.blocks.set(user, this.clock());
    this.rate(number, s);
  }

  unblock(number: string, user: string): void {
    const s = this.state(number);
    s.blocks.delete(user);
    this.rate(number, s);
  }

  private rate(number: string, s: NumberState): void {
    const now = this.clock();
    const recent = (m: Map<string, number>) => [...m.values()].filter((t) => now - t < WEEK).length;
    const signals = new Set([...s.reports.keys(), ...s.blocks.keys()].filter((u) => now - Math.max(s.reports.get(u) ?? 0, s.blocks.get(u) ?? 0) < WEEK)).size;
    const reached = Math.max(1, this.reachedWithin(s, now, WEEK), s.lastInbound.size);
    const share = signals / reached;
    const before = s.quality;
    s.quality = signals >= this.settings.minSignals && share >= this.settings.redRate ? 'RED'
      : signals >= 1 && share >= this.settings.yellowRate ? 'YELLOW' : 'GREEN';
    const order = { GREEN: 0, YELLOW: 1, RED: 2 };
    if (order[s.quality] > order[before]) {
      // A RED number drops a tier, as Meta lowers the limit of a number whose quality fell.
      if (s.quality === 'RED' && s.tier > 0) {
        s.tier--;
        s.tierSince = now;
        this.emit(number, s, 'DOWNGRADE');
      } else this.emit(number, s, 'FLAGGED');
    } else if (order[s.quality] < order[before]) this.emit(number, s, 'UNFLAGGED');
    if (!s.blocked && recent(s.reports) >= this.settings.blockAfterReports) {
      s.blocked = true;
      this.emit(number, s, 'BLOCKED');
    }
  }

  /** Sets a number's standing directly (the platform's operator; tests and demos). */
  set(number: string, patch: { tier?: number; blocked?: boolean }): IntegrityChange {
    const s = this.state(number);
    let event: IntegrityChange['event'] = 'FLAGGED';
    if (patch.tier !== undefined && patch.tier !== s.tier) {
      event = patch.tier > s.tier ? 'UPGRADE' : 'DOWNGRADE';
      s.tier = Math.max(0, Math.min(TIERS.length - 1, patch.tier));
      s.tierSince = this.clock();
    }
    if (patch.blocked !== undefined && patch.blocked !== s.blocked) {
      s.blocked = patch.blocked;
      event = patch.blocked ? 'BLOCKED' : 'UNBLOCKED';
    }
    return this.emit(number, s, event);
  }

  /** Forgets everything about a number (the platform operator starts it afresh: tier 250, GREEN, unblocked). */
  reset(number: string): IntegrityChange {
    this.numbers.delete(number);
    for (const byNumber of this.perUser.values()) byNumber.delete(number);
    return this.emit(number, this.state(number), 'UNFLAGGED');
  }

  /** A number's standing (for the platform's own views). */
  standing(number: string): { quality_rating: Quality; current_limit: string; blocked: boolean; reached_24h: number } {
    const s = this.state(number);
    return { quality_rating: s.quality, current_limit: TIER_NAMES[s.tier]!, blocked: s.blocked, reached_24h: this.reachedWithin(s, this.clock(), DAY) };
  }

  private emit(number: string, s: NumberState, event: IntegrityChange['event']): IntegrityChange {
    const c: IntegrityChange = { number, event, quality_rating: s.quality, current_limit: TIER_NAMES[s.tier]!, blocked: s.blocked };
    this.onChange(c);
    return c;
  }
}
