import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildEnvelope, inboundMessageValue, statusValue } from '../../src/webhook/envelope.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../../src/webhook/receiver.ts';
import { asciiJson, signBody } from '../../src/webhook/signature.ts';

const SECRET = 'receiver-secret';
const target = { wabaId: 'waba1', displayPhoneNumber: '15550001111', phoneNumberId: 'pn1' };

describe('webhook receiver', () => {
  let r: WebhookReceiver | undefined;
  afterEach(async () => {
    vi.restoreAllMocks();
    await r?.close();
    r = undefined;
  });
  const post = (body: string, signature?: string) =>
    fetch(r!.url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...(signature ? { 'x-hub-signature-256': signature } : {}) } });

  it('rejects a bad or missing signature with 401 and records nothing', async () => {
    r = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v' });
    const body = asciiJson(buildEnvelope(target, [statusValue([{ wamid: 'wamid.1', status: 'sent', at: 0, recipientId: '15551234567' }])]));
    expect((await post(body, signBody('another-secret', body))).status).toBe(401);
    expect((await post(body, 'sha256=00')).status).toBe(401);
    expect((await post(body)).status).toBe(401);
    expect((await post(`${body} `, signBody(SECRET, body))).status).toBe(401);
    expect(r.received).toEqual([]);
  });

  it('accepts a signed POST over its exact bytes, records it, and prints one line per update without text or full numbers', async () => {
    const lines: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => { lines.push(String(chunk)); return true; });
    const updates: unknown[] = [];
    r = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v', print: true, onUpdate: (w) => updates.push(w.body) });
    const envelope = buildEnvelope(target, [
      statusValue([
        { wamid: 'wamid.D', status: 'delivered', at: 1_700_000_000_000, recipientId: '15551234567' },
        { wamid: 'wamid.F', status: 'failed', at: 1_700_000_000_000, recipientId: '15551234567', errorCode: 131026 },
      ]),
      inboundMessageValue('15551234567', 'wamid.IN', { message: { type: 'text', text: { body: 'secret plans äö' } }, timestamp: '1700000000' }),
    ]);
    const body = asciiJson(envelope);
    const res = await post(body, signBody(SECRET, body));
    expect(res.status).toBe(200);
    expect(r.received).toHaveLength(1);
    expect(r.received[0]!.raw.toString()).toBe(body);
    expect(r.received[0]!.body).toEqual(envelope);
    expect(updates).toEqual([envelope]);
    expect(r.statuses().map((s) => `${s.id}:${s.status}`)).toEqual(['wamid.D:delivered', 'wamid.F:failed']);
    expect(r.messages().map((m) => m.id)).toEqual(['wamid.IN']);
    const out = lines.join('');
    expect(out).toBe('webhook status delivered wamid.D\nwebhook status failed wamid.F error 131026\nwebhook message wamid.IN from 15*******67 type text\n');
    expect(out).not.toContain('secret plans');
    expect(out).not.toContain('15551234567');
  });

  it('answers the subscription GET with the challenge on the right token, 403 otherwise', async () => {
    r = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'tok' });
    const get = (token: string) => fetch(`${r!.url}?hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=c123`);
    const ok = await get('tok');
    expect([ok.status, await ok.text()]).toEqual([200, 'c123']);
    const bad = await get('nope');
    expect(bad.status).toBe(403);
    expect(await bad.text()).not.toContain('c123');
  });
});
