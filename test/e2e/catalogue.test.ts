import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { openWindows, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

/** One of each Cloud API message type, as a business sends it. */
const CATALOGUE: Record<string, Record<string, unknown> | Record<string, unknown>[]> = {
  text: { body: 'plain text' },
  location: { latitude: 52.52, longitude: 13.405, name: 'Alexanderplatz', address: 'Berlin' },
  contacts: [{ name: { formatted_name: 'Ada Lovelace', first_name: 'Ada' }, phones: [{ phone: '+441234567890', type: 'WORK' }] }],
  interactive: { type: 'button', body: { text: 'Pick one' }, action: { buttons: [{ type: 'reply', reply: { id: 'yes', title: 'Yes' } }, { type: 'reply', reply: { id: 'no', title: 'No' } }] } },
  image: { link: 'https://example.com/cat.jpg', caption: 'a cat' },
  audio: { link: 'https://example.com/hello.ogg' },
  video: { link: 'https://example.com/clip.mp4', caption: 'a clip' },
  document: { link: 'https://example.com/invoice.pdf', filename: 'invoice.pdf', caption: 'your invoice' },
  sticker: { link: 'https://example.com/smile.webp' },
};

describe('the message catalogue', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('every message type reaches the device as its structured payload, and comes back from the device to the business', async () => {
    const waId = await createDevice(sys.platformUrl, '+15559100001');
    await openWindows(sys, [waId]);
    const sent: Record<string, string> = {};
    for (const [type, payload] of Object.entries(CATALOGUE)) {
      const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messaging_product: 'whatsapp', to: waId, type, [type]: payload }),
      });
      expect(res.status, type).toBe(200);
      sent[type] = ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
    }
    // A reaction to the text.
    const react = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: waId, type: 'reaction', reaction: { message_id: sent.text, emoji: '👍' } }),
    });
    sent.reaction = ((await react.json()) as { messages: { id: string }[] }).messages[0]!.id;
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).length === Object.keys(sent).length, 'every type on the device');
    const shown = await deviceMessages(sys.platformUrl, waId);
    for (const [type, payload] of Object.entries(CATALOGUE)) {
      expect(shown.find((m) => m.id === sent[type]), type).toMatchObject({ type, [type]: payload });
    }
    expect(shown.find((m) => m.id === sent.reaction)).toMatchObject({ type: 'reaction', reaction: { message_id: sent.text, emoji: '👍' } });

    // And back: the user sends each structured type; the business receives it in the messages webhook.
    for (const [type, payload] of Object.entries(CATALOGUE)) {
      if (type === 'text' || type === 'interactive') continue; // users answer interactive messages with replies, below
      const id = await userWrites(sys, waId, '', { type, [type]: payload, text: undefined });
      expect(sys.receiver.messages().find((m) => m.id === id), type).toMatchObject({ from: waId, type, [type]: payload });
    }
    // A reaction from the user to the business's text.
    const reacted = await userWrites(sys, waId, '', { type: 'reaction', reaction: { message_id: sent.text, emoji: '❤️' }, text: undefined });
    expect(sys.receiver.messages().find((m) => m.id === reacted)).toMatchObject({ from: waId, type: 'reaction', reaction: { message_id: sent.text, emoji: '❤️' } });
    const reply = { type: 'button_reply', button_reply: { id: 'yes', title: 'Yes' } };
    const id = await userWrites(sys, waId, '', { type: 'interactive', interactive: reply, context: { message_id: sent.interactive }, text: undefined });
    expect(sys.receiver.messages().find((m) => m.id === id)).toMatchObject({ type: 'interactive', interactive: reply, context: { id: sent.interactive } });
  });

  it('every media kind by uploaded id reaches the device as the same file, and every kind comes back from the user as a media id', async () => {
    const waId = await createDevice(sys.platformUrl, '+15559100002');
    await openWindows(sys, [waId]);
    const files: Record<string, { mime: string; bytes: Buffer; extra: Record<string, unknown> }> = {
      image: { mime: 'image/jpeg', bytes: Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), randomBytes(2000)]), extra: { caption: 'a photo' } },
      audio: { mime: 'audio/ogg', bytes: Buffer.concat([Buffer.from('OggS'), randomBytes(3000)]), extra: {} },
      video: { mime: 'video/mp4', bytes: Buffer.concat([Buffer.from('ftypmp42'), randomBytes(4000)]), extra: { caption: 'a clip' } },
      document: { mime: 'application/pdf', bytes: Buffer.concat([Buffer.from('%PDF-1.7'), randomBytes(1500)]), extra: { filename: 'invoice.pdf', caption: 'your invoice' } },
      sticker: { mime: 'image/webp', bytes: Buffer.concat([Buffer.from('RIFF'), randomBytes(800)]), extra: {} },
    };
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('base64');
    const sent: Record<string, string> = {};
    for (const [kind, f] of Object.entries(files)) {
      const form = new FormData();
      form.set('messaging_product', 'whatsapp');
      form.set('type', f.mime);
      form.set('file', new Blob([f.bytes], { type: f.mime }), `file.${kind}`);
      const up = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/media`, { method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}` }, body: form });
      const mediaId = ((await up.json()) as { id: string }).id;
      const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messaging_product: 'whatsapp', to: waId, type: kind, [kind]: { id: mediaId, ...f.extra } }),
      });
      expect(res.status, kind).toBe(200);
      sent[kind] = ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
    }
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).filter((m) => Object.values(sent).includes(m.id)).length === 5, 'every media kind on the device');
    const shown = await deviceMessages(sys.platformUrl, waId);
    for (const [kind, f] of Object.entries(files)) {
      expect(shown.find((m) => m.id === sent[kind]), kind).toMatchObject({ type: kind, [kind]: { ...f.extra, mime_type: f.mime, sha256: sha(f.bytes), file_size: f.bytes.length } });
    }

    // And back: the user sends each kind; the business gets a media id whose bytes are the file.
    for (const [kind, f] of Object.entries(files)) {
      const id = await userWrites(sys, waId, '', { type: kind, [kind]: { data: f.bytes.toString('base64'), mime_type: f.mime, ...f.extra }, text: undefined });
      const got = sys.receiver.messages().find((m) => m.id === id) as Record<string, any>;
      expect(got, kind).toMatchObject({ type: kind, [kind]: { ...f.extra, mime_type: f.mime, sha256: sha(f.bytes), id: expect.stringMatching(/^\d+$/) } });
      const obj = (await (await fetch(`${sys.apiUrl}/v23.0/${got[kind].id}`, { headers: { authorization: `Bearer ${sys.business.access_token}` } })).json()) as { url: string };
      const bytes = Buffer.from(await (await fetch(obj.url, { headers: { authorization: `Bearer ${sys.business.access_token}` } })).arrayBuffer());
      expect(bytes.equals(f.bytes), kind).toBe(true);
    }
  }, 90_000);
});
