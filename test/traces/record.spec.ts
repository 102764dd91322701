import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ActorHost } from '../../src/runtime/actor-host.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { parseTrace, replayTrace } from '../../src/trace/replay.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { sendTemplate, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

/**
 * Records one trace per interesting path from the real system (API, workers, Redis, libsignal, platform
 * and devices), through the actor host's trace tap (which also sees the step that deletes a conversation
 * with its stored trace), checks it replays, and writes it to test/traces/<name>.jsonl. See record.config.ts.
 */
const only = process.env.RECORD;
const scenario = (name: string, fn: (sys: TestSystem) => Promise<string>, env: Record<string, string> = {}) =>
  (only && only !== name ? it.skip : it)(name, async () => {
    const steps = new Map<string, string[]>();
    ActorHost.traceTap = (conv, lines) => steps.set(conv, [...(steps.get(conv) ?? []), ...lines]);
    sys = await startSystem({ env });
    const conv = await fn(sys);
    const lines = steps.get(conv) ?? [];
    expect(lines.length).toBeGreaterThan(2);
    const result = replayTrace(parseTrace(lines.join('\n')));
    expect(result, JSON.stringify(result)).toMatchObject({ ok: true });
    writeFileSync(new URL(`./${name}.jsonl`, import.meta.url), `${lines.join('\n')}\n`);
  });

let sys: TestSystem | undefined;
afterEach(async () => {
  ActorHost.traceTap = undefined;
  await sys?.close();
  sys = undefined;
});

const faults = (s: TestSystem, body: Record<string, unknown>) =>
  fetch(`${s.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const statusOf = (s: TestSystem, wamid: string, status: string) => s.receiver.statuses().some((x) => x.id === wamid && x.status === status);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('record traces', () => {
  scenario('retransmission', async (s) => {
    const wa = await createDevice(s.platformUrl, '+15557500001');
    await faults(s, { drop: 1 });
    const wamid = await sendTemplate(s, wa, 'shipping_update');
    // Lost copies: the conversation retransmits the same ciphertext with backoff until the device answers.
    await pause(1500);
    await faults(s, {});
    await waitFor(() => statusOf(s, wamid, 'delivered'), 'delivered after retransmissions');
    await pause(300);
    return conversationOfWamid(wamid)!;
  }, { SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '600' });

  scenario('ttl-failure', async (s) => {
    const wa = await createDevice(s.platformUrl, '+15557500002');
    await faults(s, { drop: 1 });
    const wamid = await sendTemplate(s, wa, 'shipping_update');
    // The device never receives a copy: at the TTL (here the 4 s retention) the message fails with 131026.
    await waitFor(() => statusOf(s, wamid, 'failed'), 'failed at its TTL', 20_000);
    await faults(s, {});
    await pause(300);
    return conversationOfWamid(wamid)!;
  }, { SEALPOST_RETENTION: '4s', SEALPOST_RETRANSMIT_BASE_MS: '500', SEALPOST_RETRANSMIT_MAX_MS: '1000' });

  scenario('expiry', async (s) => {
    const wa = await createDevice(s.platformUrl, '+15557500003');
    const wamid = await sendTemplate(s, wa, 'shipping_update');
    await waitFor(() => statusOf(s, wamid, 'delivered'), 'delivered');
    const conv = conversationOfWamid(wamid)!;
    // Retention ends: the message goes, then the conversation with the user's number (its last step is the deletion).
    await waitFor(async () => !(await s.ctx.redis.exists(s.ctx.keys.meta(conv))), 'conversation deleted at the end of retention', 30_000);
    return conv;
  }, { SEALPOST_RETENTION: '3s', SEALPOST_SWEEP_EVERY_MS: '500' });

  scenario('inbound-inside-window', async (s) => {
    const wa = await createDevice(s.platformUrl, '+15557500004');
    // The user writes first (PreKey message: the session comes from their side), the business answers
    // free-form inside the 24-hour window, the user writes again.
    await userWrites(s, wa, 'where is my order?');
    const reply = await sendText(s, wa, 'it ships today');
    await waitFor(() => statusOf(s, reply, 'delivered'), 'reply delivered');
    const again = await userWrites(s, wa, 'thanks');
    await pause(300);
    return conversationOfWamid(again) ?? conversationOfWamid(reply)!;
  });

  scenario('inbound-outside-window', async (s) => {
    const wa = await createDevice(s.platformUrl, '+15557500005');
    // Outside any service window only a template goes (a free-form send is refused at the API and never
    // reaches the conversation); the user's answer then opens the window and a free-form reply follows.
    const refused = await fetch(`${s.apiUrl}/v23.0/${s.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${s.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: wa, type: 'text', text: { body: 'hello?' } }),
    });
    expect(refused.status).toBe(400);
    const template = await sendTemplate(s, wa, 'order_confirmation');
    await waitFor(() => statusOf(s, template, 'delivered'), 'template delivered');
    await userWrites(s, wa, 'can I change the address?');
    const reply = await sendText(s, wa, 'yes, reply with the new one');
    await waitFor(() => statusOf(s, reply, 'delivered'), 'reply delivered');
    await pause(300);
    return conversationOfWamid(reply)!;
  });
});
