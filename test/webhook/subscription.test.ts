import { afterEach, describe, expect, it } from 'vitest';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { verifySubscription } from '../../src/webhook/subscription.ts';
import { closedPortUrl, scriptedEndpoint } from './endpoint.ts';

describe('webhook subscription check', () => {
  const stop: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stop.splice(0).reverse()) await s();
  });

  it('sends hub.mode, hub.verify_token and a fresh hub.challenge, and succeeds on 200 echoing it', async () => {
    const r = await startWebhookReceiver({ appSecret: 's', verifyToken: 'right' });
    stop.push(r.close);
    expect(await verifySubscription(r.url, 'right')).toEqual({ ok: true });
    const ep = await scriptedEndpoint([]);
    stop.push(ep.close);
    await verifySubscription(`${ep.url}?keep=1`, 'tok');
    await verifySubscription(ep.url, 'tok');
    const [a, b] = ep.seen.map((s) => new URL(s.url, 'http://x').searchParams);
    expect(ep.seen[0]!.method).toBe('GET');
    expect(a!.get('keep')).toBe('1');
    expect(a!.get('hub.mode')).toBe('subscribe');
    expect(a!.get('hub.verify_token')).toBe('tok');
    expect(a!.get('hub.challenge')).toMatch(/^[0-9a-f]{24}$/);
    expect(b!.get('hub.challenge')).not.toBe(a!.get('hub.challenge'));
  });

  it('fails on a wrong token, a wrong body, a non-200, a redirect, a timeout or no server, with a one-line reason', async () => {
    const r = await startWebhookReceiver({ appSecret: 's', verifyToken: 'right' });
    const wrongBody = await scriptedEndpoint([200], { answer: 'ok' });
    const err = await scriptedEndpoint([500]);
    const redirect = await scriptedEndpoint([302], { headers: { location: r.url } });
    const slow = await scriptedEndpoint([], { hangMs: 2000 });
    stop.push(r.close, wrongBody.close, err.close, redirect.close, slow.close);
    const results = [
      await verifySubscription(r.url, 'wrong'),
      await verifySubscription(wrongBody.url, 'right'),
      await verifySubscription(err.url, 'right'),
      await verifySubscription(redirect.url, 'right'),
      await verifySubscription(slow.url, 'right', { timeoutMs: 100 }),
      await verifySubscription(await closedPortUrl(), 'right'),
    ];
    expect(results.map((x) => x.ok)).toEqual([false, false, false, false, false, false]);
    const reasons = results.map((x) => (x.ok ? '' : x.reason));
    expect(reasons[0]).toContain('HTTP 403');
    expect(reasons[1]).toContain('without echoing');
    expect(reasons[2]).toContain('HTTP 500');
    expect(reasons[3]).toContain('HTTP 302');
    expect(reasons[4]).toContain('unreachable');
    expect(reasons[5]).toMatch(/unreachable: .*ECONNREFUSED/);
    for (const reason of reasons) {
      expect(reason).not.toContain('\n');
      expect(reason).not.toContain('right'); // the verify token never appears in a reason
    }
  });
});
