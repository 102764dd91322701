import { randomBytes } from 'node:crypto';
import { egressFetch, readAtMost, webhookUrlProblem } from './egress.ts';

/** The outcome of a subscription check. */
export type SubscriptionCheck = { ok: true } | { ok: false; reason: string };

/**
 * The Cloud API's subscription check: GET `url?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`;
 * success only on HTTP 200 whose body is exactly the challenge. Reasons name only the URL's origin, never
 * its query, so the verify token stays out of logs and CLI output.
 */
export async function verifySubscription(url: string, verifyToken: string, opts: { timeoutMs?: number; denyPrivate?: boolean } = {}): Promise<SubscriptionCheck> {
  const problem = await webhookUrlProblem(url, opts.denyPrivate ?? false);
  if (problem) return { ok: false, reason: problem };
  const challenge = randomBytes(12).toString('hex');
  const u = new URL(url);
  u.searchParams.set('hub.mode', 'subscribe');
  u.searchParams.set('hub.verify_token', verifyToken);
  u.searchParams.set('hub.challenge', challenge);
  let res: Response;
  try {
    // Redirects are not followed: deliveries are not either, so a URL that redirects would verify but never get a webhook.
    res = await egressFetch(opts.denyPrivate ?? false)(u.toString(), { redirect: 'manual', signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000) });
  } catch (e) {
    const cause = (e as Error & { cause?: Error }).cause;
    return { ok: false, reason: `${u.origin} unreachable: ${cause?.message ?? (e as Error).message}` };
  }
  // The timeout also covers the body; an endpoint that stalls mid-answer fails the check instead of throwing.
  // At most 64 KiB is read: the challenge is 24 characters, and an endpoint streaming without end is cut off.
  const answer = await readAtMost(res).catch(() => null);
  const body = answer && !answer.truncated ? answer.text : answer ? '' : null;
  if (res.status !== 200) return { ok: false, reason: `${u.origin} answered HTTP ${res.status} (needs 200)` };
  if (body === null) return { ok: false, reason: `${u.origin} did not finish its answer in time` };
  if (body !== challenge) return { ok: false, reason: `${u.origin} answered 200 without echoing hub.challenge` };
  return { ok: true };
}
