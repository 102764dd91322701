import { describe, expect, it } from 'vitest';
import { expectError, KNOWN_INBOUND, text, useApi } from './fixture.ts';

describe('POST /{version}/{phone_number_id}/messages: send', () => {
  const f = useApi();

  it('accepts a text with and without the version segment, answering exactly as the Cloud API', async () => {
    for (const path of [`/v23.0/${f.a.phone_number_id}/messages`, `/${f.a.phone_number_id}/messages`]) {
      const res = await f.post(text('hi', { biz_opaque_callback_data: 'cb', context: { message_id: 'wamid.PREV' } }), { path });
      expect(res.statusCode).toBe(200);
      expect(res.body).toBe(JSON.stringify({
        messaging_product: 'whatsapp', contacts: [{ input: '+1 (555) 123-4567', wa_id: '15551234567' }], messages: [{ id: `wamid.TEST${f.outbound.calls.length}` }],
      }));
    }
    expect(f.outbound.calls).toHaveLength(2);
    for (const call of f.outbound.calls) {
      expect(call).toEqual({
        businessId: f.a.business_id, phoneNumberId: f.a.phone_number_id, waId: '15551234567',
        message: { type: 'text', text: { body: 'hi' }, context: { message_id: 'wamid.PREV' } }, bizOpaqueCallbackData: 'cb',
      });
    }
  });

  it('hands over only what was given: preview_url when present, no context or callback data when absent', async () => {
    expect((await f.post(text('see https://example.com', { text: { body: 'see https://example.com', preview_url: true } }))).statusCode).toBe(200);
    expect((await f.post(text('plain'))).statusCode).toBe(200);
    expect(f.outbound.calls).toEqual([
      { businessId: f.a.business_id, phoneNumberId: f.a.phone_number_id, waId: '15551234567', message: { type: 'text', text: { body: 'see https://example.com', preview_url: true } } },
      { businessId: f.a.business_id, phoneNumberId: f.a.phone_number_id, waId: '15551234567', message: { type: 'text', text: { body: 'plain' } } },
    ]);
  });

  it('takes `type` as text when it is left out, as the Cloud API does', async () => {
    const res = await f.post({ messaging_product: 'whatsapp', to: '15551234567', text: { body: 'no type' } });
    expect(res.statusCode).toBe(200);
    expect(f.outbound.calls[0]!.message).toEqual({ type: 'text', text: { body: 'no type' } });
  });

  it('normalises `to` (a number without + is already the full international number) and echoes the original as input', async () => {
    const cases: [string, string][] = [['+44 20 7946 0958', '442079460958'], ['15551234567', '15551234567'], ['(49) 30-1234567', '49301234567'], ['+1234567', '1234567'], ['+123456789012345', '123456789012345']];
    for (const [to, waId] of cases) {
      const res = await f.post(text('x', { to }));
      expect(res.statusCode, to).toBe(200);
      expect(res.json().contacts).toEqual([{ input: to, wa_id: waId }]);
    }
    expect(f.outbound.calls.map((c) => c.waId)).toEqual(cases.map(([, w]) => w));
  });

  it('counts the 4,096-character limit in code points: 4,096 non-ASCII characters pass, 4,097 do not', async () => {
    for (const ch of ['é', '👋', '中']) {
      expect((await f.post(text(ch.repeat(4096)))).statusCode, ch).toBe(200);
    }
    expect(f.outbound.calls.map((c) => [...(c.message.text as { body: string }).body].length)).toEqual([4096, 4096, 4096]);
    f.outbound.calls = [];
    for (const ch of ['é', '👋', '中', 'a']) expectError(f, await f.post(text(ch.repeat(4097))), 100, 400);
  });

  it('100 for an empty, blank or missing text and a non-boolean preview_url', async () => {
    expectError(f, await f.post(text('')), 100, 400);
    expectError(f, await f.post(text(' \n\t ')), 100, 400);
    expectError(f, await f.post({ ...text('x'), text: undefined }), 100, 400);
    expectError(f, await f.post({ ...text('x'), text: 'hi' }), 100, 400);
    expectError(f, await f.post({ ...text('x'), text: { body: 42 } }), 100, 400);
    expectError(f, await f.post({ ...text('x'), text: { body: 'x', preview_url: 'yes' } }), 100, 400);
  });

  it('100 for a wrong or missing messaging_product, an unknown type, and a recipient_type other than individual or group', async () => {
    expectError(f, await f.post({ ...text('x'), messaging_product: 'telegram' }), 100, 400);
    expectError(f, await f.post({ ...text('x'), messaging_product: undefined }), 100, 400);
    const unknown = expectError(f, await f.post({ ...text('x'), type: 'hologram' }), 100, 400);
    expect(unknown.message).toBe('(#100) Invalid parameter');
    expect(unknown.error_data.details).toMatch(/type/);
    expectError(f, await f.post({ ...text('x'), type: 42 }), 100, 400);
    // Without groups on this server (the fixture has none), a group send is a type it does not send.
    expectError(f, await f.post({ ...text('x'), recipient_type: 'group' }), 131051, 400);
    expectError(f, await f.post({ ...text('x'), recipient_type: 'broadcast' }), 100, 400);
  });

  it('100 for a body that is not a JSON object', async () => {
    for (const raw of ['[]', '"text"', '42', 'null']) expectError(f, await f.post(null, { raw }), 100, 400);
  });

  it('100 for an invalid recipient', async () => {
    for (const to of [undefined, '', '   ', 'abc', '+0123456789', '0123456789', '12345', '123456', '+1234567890123456', '+1 555 CALL-NOW', '1555.123.4567', 15551234567]) {
      expectError(f, await f.post({ ...text('x'), to }), 100, 400);
    }
  });

  it('limits biz_opaque_callback_data to 512 bytes (not characters), and requires context.message_id', async () => {
    expect((await f.post(text('x', { biz_opaque_callback_data: 'é'.repeat(256) }))).statusCode).toBe(200);
    expect(f.outbound.calls[0]!.bizOpaqueCallbackData).toBe('é'.repeat(256));
    f.outbound.calls = [];
    expectError(f, await f.post(text('x', { biz_opaque_callback_data: 'x'.repeat(513) })), 100, 400);
    expectError(f, await f.post(text('x', { biz_opaque_callback_data: 'é'.repeat(257) })), 100, 400);
    expectError(f, await f.post(text('x', { biz_opaque_callback_data: 7 })), 100, 400);
    expectError(f, await f.post(text('x', { context: {} })), 100, 400);
    expectError(f, await f.post(text('x', { context: { message_id: 5 } })), 100, 400);
    expectError(f, await f.post(text('x', { context: 'wamid.X' })), 100, 400);
  });

  it('131051 for what Sealpost does not send yet (catalogue and flow messages), 100 for malformed structured messages', async () => {
    const unsupported = expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'interactive', interactive: { type: 'product_list', body: { text: 'x' }, action: {} } }), 131051, 400);
    expect(unsupported.error_data.details).toMatch(/not currently supported/);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'image', image: { id: 'abc' } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'image', image: { id: '123', link: 'https://x/y.png' } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'image', image: { link: 'ftp://x/y.png' } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'location', location: { latitude: 91, longitude: 0 } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'interactive', interactive: { type: 'button', body: { text: 'pick' }, action: { buttons: [] } } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'reaction', reaction: { emoji: '👍' } }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'contacts', contacts: [{ phones: [] }] }), 100, 400);
    expectError(f, await f.post({ messaging_product: 'whatsapp', to: '15551234567', type: 'template', template: { name: 'Hello World' } }), 100, 400);
  });
});

describe('POST /{version}/{phone_number_id}/messages: mark as read', () => {
  const f = useApi();
  const read = (extra: Record<string, unknown> = {}) => ({ messaging_product: 'whatsapp', status: 'read', message_id: KNOWN_INBOUND, ...extra });

  it('marks a received message read, with or without the version and a typing indicator', async () => {
    for (const [body, path] of [[read(), `/v23.0/${f.a.phone_number_id}/messages`], [read({ typing_indicator: { type: 'text' } }), `/${f.a.phone_number_id}/messages`]] as const) {
      const res = await f.post(body, { path });
      expect(res.statusCode).toBe(200);
      expect(res.body).toBe('{"success":true}');
    }
    expect(f.outbound.reads).toEqual([
      { businessId: f.a.business_id, phoneNumberId: f.a.phone_number_id, messageId: KNOWN_INBOUND },
      { businessId: f.a.business_id, phoneNumberId: f.a.phone_number_id, messageId: KNOWN_INBOUND },
    ]);
  });

  it('100 for an id the number never received', async () => {
    const e = expectError(f, await f.post(read({ message_id: 'wamid.OTHER' })), 100, 400);
    expect(e.error_data.details).toMatch(/message_id/);
  });

  it('100 without reaching the runtime for a missing message_id, another status or a bad typing indicator', async () => {
    expectError(f, await f.post(read({ message_id: undefined })), 100, 400);
    expectError(f, await f.post(read({ message_id: '' })), 100, 400);
    expectError(f, await f.post(read({ status: 'delivered' })), 100, 400);
    expectError(f, await f.post(read({ messaging_product: 'sms' })), 100, 400);
    expectError(f, await f.post(read({ typing_indicator: { type: 'audio' } })), 100, 400);
    expectError(f, await f.post(read({ typing_indicator: true })), 100, 400);
    expect(f.outbound.reads).toEqual([]);
  });
});
