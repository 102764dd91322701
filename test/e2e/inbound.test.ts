import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { openWindows, sendTemplate, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';
import { readTraceLines } from '../../src/trace/store.ts';

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

describe('inbound: users write to businesses', () => {
  let sys: TestSystem;
  let n = 0;
  const phone = () => `+155590${String(++n).padStart(5, '0')}`;

  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('user → business → user: the business gets the Cloud API message webhook and replies quoting it', async () => {
    const res = await post(`${sys.platformUrl}/sim/devices`, { phone: phone(), name: 'Sheena Nelson' });
    const { wa_id: waId } = (await res.json()) as { wa_id: string };
    const question = await userWrites(sys, waId, 'Does it come in another colour? ✓');
    const hook = sys.receiver.received.find((w) => w.raw.toString().includes(question))!.body;
    const value = hook.entry[0].changes[0].value;
    expect(value.contacts).toEqual([{ profile: { name: 'Sheena Nelson' }, wa_id: waId }]);
    expect(value.messages).toEqual([{ from: waId, id: question, timestamp: expect.stringMatching(/^\d{10}$/), type: 'text', text: { body: 'Does it come in another colour? ✓' } }]);
    expect(value.metadata).toEqual({ display_phone_number: sys.business.display_phone_number, phone_number_id: sys.business.phone_number_id });
    // The business answers inside the window, quoting the question.
    const answer = await sendText(sys, waId, 'Yes: red and blue.', { context: { message_id: question } });
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).some((m) => m.id === answer), 'the answer on the device');
    expect((await deviceMessages(sys.platformUrl, waId)).find((m) => m.id === answer)).toMatchObject({ text: { body: 'Yes: red and blue.' }, context: { message_id: question } });
    // And the user replies to the answer: the webhook carries the Cloud API's context {from, id}.
    const followUp = await userWrites(sys, waId, 'Blue, please', { context: { message_id: answer } });
    const reply = sys.receiver.messages().find((m) => m.id === followUp)!;
    expect(reply.context).toEqual({ from: sys.business.display_phone_number, id: answer });
  });

  it('131047 for a free-form message outside the window; a template is accepted there', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    const res = await post(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`,
      { messaging_product: 'whatsapp', to: waId, type: 'text', text: { body: 'unsolicited' } }, { authorization: `Bearer ${sys.business.access_token}` });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(131047);
    const wamid = await sendTemplate(sys, waId, 'shipping_update');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'the template delivered');
    expect(await deviceMessages(sys.platformUrl, waId)).toEqual([expect.objectContaining({ id: wamid, type: 'template', template: { name: 'shipping_update', language: { code: 'en_US' } } })]);
  });

  it("the business's read receipt reaches the device", async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    const id = await userWrites(sys, waId, 'please read me');
    const res = await post(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`,
      { messaging_product: 'whatsapp', status: 'read', message_id: id }, { authorization: `Bearer ${sys.business.access_token}` });
    expect(await res.json()).toEqual({ success: true });
    await waitFor(async () => {
      const sent = (await (await fetch(`${sys.platformUrl}/sim/devices/${waId}/sent`)).json()) as { messages: { id: string; read: boolean }[] };
      return sent.messages.some((m) => m.id === id && m.read);
    }, 'the device to see its message read');
  });

  it('a duplicated envelope gives one webhook message', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    await openWindows(sys, [waId]);
    await post(`${sys.platformUrl}/sim/faults`, { duplicate: 1 });
    try {
      const id = await userWrites(sys, waId, 'said once, carried twice');
      const conv = conversationOfWamid(await sendText(sys, waId, 'ack'))!;
      await waitFor(async () => (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv)).some((l) => l.includes('MESSAGE_DUPLICATE')), 'the second copy to be seen');
      expect(sys.receiver.messages().filter((m) => m.id === id)).toHaveLength(1);
    } finally {
      await post(`${sys.platformUrl}/sim/faults`, {});
    }
  });

  it('a business receiver answering in 5 s does not slow another business down', async () => {
    const slow = await startWebhookReceiver({ appSecret: 'slow-secret-1', verifyToken: 'v' });
    slow.misbehave({ delayMs: 5000 });
    const a = await sys.ctx.businesses.create({ name: 'Slow Co', webhookUrl: slow.url, appSecret: 'slow-secret-1', verifyToken: 'v' });
    await sys.ctx.publisher.ensure(a.phone_number_id);
    try {
      const userA = await createDevice(sys.platformUrl, phone());
      // A's user writes; A's receiver sits on the webhook for 5 s.
      const r = await post(`${sys.platformUrl}/sim/devices/${userA}/messages`, { to: a.display_phone_number, text: 'hello slow' });
      expect(r.status).toBe(200);
      await waitFor(() => slow.answering() > 0, "A's webhook to be in flight");
      // Meanwhile B (the test's business) hears from its users and sends to them, all the way to delivered.
      const users = await Promise.all([0, 1, 2, 3, 4].map(() => createDevice(sys.platformUrl, phone())));
      await openWindows(sys, users);
      const sent = await Promise.all(users.map((u) => sendText(sys, u, 'fast lane')));
      await waitFor(() => sent.every((w) => sys.receiver.statuses().some((x) => x.id === w && x.status === 'delivered')), 'B delivered');
      // All of it while A's receiver still sits on A's first webhook: B waited for none of A's.
      expect(slow.answering()).toBeGreaterThan(0);
      expect(slow.received).toEqual([]); // A's first webhook is still being answered: B did not wait for it
    } finally {
      await slow.close();
    }
  });
});

describe('inbound under webhook failures', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_WEBHOOK_BACKOFF_BASE_MS: '100', SEALPOST_WEBHOOK_BACKOFF_MAX_MS: '1000' } });
  });
  afterAll(async () => sys?.close());

  it('500 messages from 50 users reach a receiver failing 30 % of requests and down for 20 s, in order per conversation', async () => {
    const users = await Promise.all(Array.from({ length: 50 }, (_, i) => createDevice(sys.platformUrl, `+1555950${String(i).padStart(4, '0')}`)));
    sys.receiver.misbehave({ failRate: 0.3 });
    const sent = new Map<string, string[]>();
    let outage: Promise<void> | undefined;
    await Promise.all(users.map(async (waId, u) => {
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) {
        if (u === 0 && i === 3) {
          sys.receiver.failWith(503);
          outage = new Promise((r) => setTimeout(() => { sys.receiver.failWith(null); r(); }, 20_000));
        }
        const res = await post(`${sys.platformUrl}/sim/devices/${waId}/messages`, { to: sys.business.display_phone_number, text: `u${u} #${i}` });
        ids.push(((await res.json()) as { id: string }).id);
      }
      sent.set(waId, ids);
    }));
    await outage;
    const all = [...sent.values()].flat();
    await waitFor(() => {
      const got = new Set(sys.receiver.messages().map((m) => m.id));
      return all.every((id) => got.has(id));
    }, 'all 500 at the receiver', 120_000, 250);
    const received = sys.receiver.messages();
    for (const [waId, ids] of sent) {
      const mine = received.filter((m) => m.from === waId && ids.includes(m.id)).map((m) => m.id);
      const firstSeen = mine.filter((id, i) => mine.indexOf(id) === i);
      expect(firstSeen).toEqual(ids); // in order per conversation
      for (const id of ids) {
        const copies = received.filter((m) => m.id === id);
        expect(copies.every((c) => JSON.stringify(c) === JSON.stringify(copies[0]))).toBe(true); // repeats are identical
      }
    }
  }, 180_000);

  it('a receiver down for the whole run gets everything once it comes back', async () => {
    const users = await Promise.all(Array.from({ length: 5 }, (_, i) => createDevice(sys.platformUrl, `+1555960${String(i).padStart(4, '0')}`)));
    sys.receiver.misbehave({});
    sys.receiver.failWith(503);
    const ids: string[] = [];
    for (const waId of users) {
      const res = await post(`${sys.platformUrl}/sim/devices/${waId}/messages`, { to: sys.business.display_phone_number, text: 'while you were out' });
      ids.push(((await res.json()) as { id: string }).id);
    }
    // Wait until the router has tried (and failed) more than once, then bring the receiver back.
    const refusedBefore = sys.receiver.refused();
    await waitFor(() => sys.receiver.refused() >= refusedBefore + 2, 'two attempts refused');
    expect(sys.receiver.messages().filter((m) => ids.includes(m.id))).toEqual([]);
    sys.receiver.failWith(null);
    await waitFor(() => ids.every((id) => sys.receiver.messages().some((m) => m.id === id)), 'everything after the receiver came back', 60_000);
  });
});
