import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationId, conversationOfWamid, newWamid } from '../../src/runtime/ids.ts';
import { createDevice, sendText, startSystem, userWrites, waitFor, type TestSystem } from '../helpers/system.ts';

/**
 * A user's message id is the user's phone's to choose, so a modified phone (the platform's `id` option) can
 * choose a malformed id, an id another user's message already has, or one shaped like Sealpost's own. None of
 * them may reach the business, move another conversation's index entry, or be mistaken for Sealpost's ids.
 */
describe('inbound message ids chosen by the device', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  /** Sends as the user with a chosen id; the platform's answer echoes it. */
  const writeWithId = async (waId: string, id: string, text: string) => {
    const res = await fetch(`${sys.platformUrl}/sim/devices/${waId}/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: sys.business.display_phone_number, text, id }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { id: string }).id;
  };
  const indexed = async (id: string) => JSON.parse((await sys.ctx.redis.get(sys.ctx.keys.messageIndex(id))) ?? 'null') as { c: string } | null;

  it('a malformed id, a taken id or one shaped like a Sealpost wamid never reaches the business; the owner keeps its id', async () => {
    const alice = await createDevice(sys.platformUrl, '+15557100001');
    const mallory = await createDevice(sys.platformUrl, '+15557100002');
    const aliceId = await userWrites(sys, alice, 'my order, please');
    const aliceConv = await conversationId(sys.ctx.dataKeys, sys.business.business_id, sys.business.phone_number_id, alice);
    expect((await indexed(aliceId))?.c).toBe(aliceConv);
    // The business has written to Alice: a Sealpost wamid naming her conversation.
    const toAlice = await sendText(sys, alice, 'on its way');
    expect(conversationOfWamid(toAlice)).toBe(aliceConv);

    const refused = [
      await writeWithId(mallory, '../../../admin', 'path-like id'),
      await writeWithId(mallory, `wamid.${'A'.repeat(500)}`, 'a very long id'),
      await writeWithId(mallory, aliceId, 'an id Alice already has'),
      await writeWithId(mallory, toAlice, "the id of Sealpost's message to Alice"),
      await writeWithId(mallory, newWamid(aliceConv), 'an id shaped like Sealpost naming her conversation'),
    ];
    // Messages of one conversation reach the business in order: once the next one arrives, the refused are gone for good.
    const after = await userWrites(sys, mallory, 'an ordinary message');
    const seen = sys.receiver.messages().filter((m) => m.from === mallory).map((m) => (m as { text?: { body: string } }).text?.body);
    expect(seen).toEqual(['an ordinary message']);
    for (const id of refused) expect(sys.receiver.messages().filter((m) => m.id === id && m.from === mallory)).toEqual([]);
    // Alice's id still leads to Alice: the business's read receipt goes to her.
    expect((await indexed(aliceId))?.c).toBe(aliceConv);
    expect((await indexed(after))?.c).toBe(await conversationId(sys.ctx.dataKeys, sys.business.business_id, sys.business.phone_number_id, mallory));
    const read = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', status: 'read', message_id: aliceId }),
    });
    expect(read.status).toBe(200);
    await waitFor(async () => {
      const sent = (await (await fetch(`${sys.platformUrl}/sim/devices/${alice}/sent`)).json()) as { messages: { id: string; read: boolean }[] };
      return sent.messages.some((m) => m.id === aliceId && m.read);
    }, 'Alice to see her message read');
  }, 90_000);

  it('a well-formed id the device chose is kept as the Cloud API id', async () => {
    const user = await createDevice(sys.platformUrl, '+15557100003');
    const id = await writeWithId(user, 'wamid.HBgLMTU1NTcxMDAwMDMVAgASGBQzQUZCRDg3', 'chosen id');
    await waitFor(() => sys.receiver.messages().some((m) => m.id === id), 'the message with its chosen id');
  });
});
