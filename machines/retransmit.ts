import { unitHash } from './ids.ts';

/**
 * Retransmission timing shared by the conversation and group machines: the backoff, the one pending timer
 * of an actor, and when it is replaced. Pure, deterministic (the jitter is a hash), so traces replay.
 */

/** Something an actor still owes: resent at `nextAttemptAt` (null while waiting for the transport), given up at `expiresAt`. */
export interface Owed {
  wamid: string;
  attempts: number;
  nextAttemptAt: number | null;
  expiresAt: number;
}

/** An actor's one pending retransmit/expiry timer. */
export type Timer = { id: string; at: number } | null;

/** Exponential retransmission backoff with a deterministic ±20 % jitter per (message, attempt). */
export function backoff(s: { retransmitBaseMs: number; retransmitMaxMs: number }, m: Pick<Owed, 'wamid' | 'attempts'>): number {
  const base = Math.min(s.retransmitBaseMs * 2 ** Math.max(0, m.attempts - 1), s.retransmitMaxMs);
  return Math.round(base * (0.8 + 0.4 * unitHash(`${m.wamid}:${m.attempts}`)));
}

/** When the actor next needs waking: the earliest retransmission or expiry of what it still owes. */
export function nextWake(messages: readonly Owed[]): number | null {
  let at: number | null = null;
  for (const m of messages) {
    const t = Math.min(m.nextAttemptAt ?? Infinity, m.expiresAt);
    if (at === null || t < at) at = t;
  }
  return at;
}

/**
 * The timer change the owed messages call for: none when nothing is owed (`cancel` the pending one), a new one
 * when the next wake is earlier than the pending timer. An earlier timer is not cancelled when a later one
 * suffices: it fires, finds nothing due, and replans.
 */
export function timerPlan(timer: Timer, messages: readonly Owed[]): { cancel?: string; schedule?: { id: string; at: number } } {
  const at = nextWake(messages);
  if (at === null) return timer ? { cancel: timer.id } : {};
  if (timer && timer.at <= at) return {};
  return { ...(timer ? { cancel: timer.id } : {}), schedule: { id: `rt:${at}`, at } };
}

/** The timer the actor remembers after {@link timerPlan}'s change. */
export function replanned(timer: Timer, messages: readonly Owed[]): Timer {
  const at = nextWake(messages);
  if (at === null) return null;
  return !timer || timer.at > at ? { id: `rt:${at}`, at } : timer;
}

/** The timer after a RETRANSMIT_DUE: cleared when it is the one that fired (or the event names none). */
export function afterFired(timer: Timer, event: { type: string; timerId?: string }): Timer {
  return event.type === 'RETRANSMIT_DUE' && timer && (!event.timerId || event.timerId === timer.id) ? null : timer;
}
