import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { capturedLogs, captureLogs, openWindows, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';
import { readTraceLines } from '../../src/trace/store.ts';

/**
 * The privacy suite: canary texts and canary phone numbers through every path (outbound, inbound,
 * retransmission through a lossy transport, a message that fails at its TTL, webhooks retried), then every
 * Redis key and value, every log line, every trace and every request the transport received is scanned.
 */
describe('privacy: canaries through every path', () => {
  let sys: TestSystem;
  const traffic: string[] = [];

  beforeAll(async () => {
    captureLogs();
    sys = await startSystem({
      env: { SEALPOST_RETENTION: '15s', SEALPOST_RETRANSMIT_BASE_MS: '200', SEALPOST_RETRANSMIT_MAX_MS: '500' },
      // What the router sends the transport (`/v1`); `/sim` is the simulated users typing and reading.
      platformTap: (method, url, body) => {
        if (url.startsWith('/v1/')) traffic.push(`${method} ${url} ${JSON.stringify(body ?? null)}`);
      },
    });
  });
  afterAll(async () => sys?.close());

  it('finds no canary text anywhere but the devices and the business, and canary numbers only where allowed', async () => {
    const canary = () => `CANARY-${randomUUID()}`;
    // Canary phone numbers: each user is one.
    const phones = ['+15553000001', '+15553000002', '+15553000003', '+15553000004'];
    const [a, b, c, lost] = await Promise.all(phones.map((p) => createDevice(sys.platformUrl, p)));
    const texts: string[] = [];
    // b reads on a linked laptop too: every message to b is encrypted for it as well, and it writes a canary.
    const laptop = ((await (await fetch(`${sys.platformUrl}/sim/devices/${b!}/linked`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).json()) as { device_id: number }).device_id;

    // Inbound (the users open the window), with a non-ASCII canary.
    const inboundCanary = `${canary()} héllo ✓`;
    texts.push(inboundCanary);
    await userWrites(sys, a!, inboundCanary);
    await openWindows(sys, [b!, c!, lost!]);
    const fromLaptop = `${canary()} from the laptop`;
    texts.push(fromLaptop);
    await userWrites(sys, b!, fromLaptop, { device: laptop });

    // Outbound, clean.
    const out1 = canary();
    texts.push(out1);
    const out1Id = await sendText(sys, a!, out1);
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === out1Id && s.status === 'delivered'), 'the clean message delivered');

    // Retransmission: the transport drops and duplicates; the webhook receiver fails half its requests.
    sys.receiver.misbehave({ failRate: 0.5 });
    await fetch(`${sys.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ drop: 0.4, duplicate: 0.3, reorder: true }) });
    const lossy = [canary(), canary(), canary()];
    texts.push(...lossy);
    const lossyIds: string[] = [];
    for (const t of lossy) lossyIds.push(await sendText(sys, b!, t));
    await waitFor(() => lossyIds.every((id) => sys.receiver.statuses().some((s) => s.id === id && s.status === 'delivered')), 'lossy messages delivered');
    await waitFor(async () => (await deviceMessages(sys.platformUrl, b!, laptop)).length === lossy.length, 'the laptop to show the lossy messages');
    expect((await deviceMessages(sys.platformUrl, b!, laptop)).map((m) => m.text?.body)).toEqual(lossy);
    // A trace taken now (the short retention may delete the conversation before the final scan).
    const { conversationOfWamid } = await import('../../src/runtime/ids.ts');
    const traceText = (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conversationOfWamid(lossyIds[0]!)!), conversationOfWamid(lossyIds[0]!)!)).join('\n');
    expect(traceText).toContain('TRANSPORT_ACCEPTED');
    for (const t of lossy) expect(traceText).not.toContain(t);
    expect(traceText).not.toContain(b!);

    // Failure: a message whose device never answers fails at its TTL.
    await fetch(`${sys.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ drop: 1 }) });
    const failing = canary();
    texts.push(failing);
    const failedId = await sendText(sys, lost!, failing);
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === failedId && s.status === 'failed'), 'the failure', 30_000);
    await fetch(`${sys.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({}) });
    sys.receiver.misbehave({});
    await waitFor(async () => (await sys.ctx.redis.llen(sys.ctx.keys.webhookOutbox(sys.business.business_id))) === 0, 'the webhook outbox to drain');

    // The devices and the business really got the plaintext, so the scans below are meaningful.
    expect((await deviceMessages(sys.platformUrl, a!)).map((m) => m.text?.body)).toContain(out1);
    expect(sys.receiver.messages().some((m) => JSON.stringify(m).includes(inboundCanary))).toBe(true);

    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    expect(dump.size).toBeGreaterThan(10);
    const digitsOf = (p: string) => p.replace(/\D/g, '');
    for (const t of texts) {
      const ascii = t.replace(/[^\x20-\x7e]/g, '');
      expect(keysContaining(dump, ascii), `Redis holding ${t}`).toEqual([]);
      expect(keysContaining(dump, Buffer.from(t).toString('base64').slice(0, 24)), `Redis holding ${t} in base64`).toEqual([]);
      expect(capturedLogs.filter((l) => l.includes(ascii)), `logs holding ${t}`).toEqual([]);
      expect(traffic.filter((r) => r.includes(ascii)), `transport traffic holding ${t}`).toEqual([]);
    }
    for (const p of phones) {
      // Never in plaintext at rest once webhooks are delivered (the conversation holds it sealed), never
      // unmasked in a log line; the transport may see it: it routes by it.
      expect(keysContaining(dump, digitsOf(p)), `Redis holding ${p}`).toEqual([]);
      expect(capturedLogs.filter((l) => l.includes(digitsOf(p))), `logs holding ${p}`).toEqual([]);
    }
    expect(traffic.some((r) => r.startsWith('POST /v1/messages'))).toBe(true);
  }, 120_000);
});
