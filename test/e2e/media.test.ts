import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPrefix } from '../helpers/scan.ts';
import { deviceMessages, openWindows, startSystem, type TestSystem } from '../helpers/system.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';

/** Media as the Cloud API has it: upload (multipart), the media object, download with the token, delete. */
describe('media: upload, retrieve, download, delete', () => {
  let sys: TestSystem;
  let other: { phone_number_id: string; access_token: string; business_id: string };
  /** Every request body the transport received (attachments are raw bytes). */
  const traffic: Buffer[] = [];
  beforeAll(async () => {
    sys = await startSystem({ platformTap: (_m, _u, body) => traffic.push(Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body ?? null))) });
    other = await sys.ctx.businesses.create({ name: 'Other Co', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
  });
  afterAll(async () => sys?.close());

  const upload = async (bytes: Buffer, type: string, opts: { token?: string; pn?: string; product?: string; filename?: string } = {}) => {
    const form = new FormData();
    form.set('messaging_product', opts.product ?? 'whatsapp');
    form.set('type', type);
    form.set('file', new Blob([bytes], { type }), opts.filename ?? 'file.bin');
    const res = await fetch(`${sys.apiUrl}/v23.0/${opts.pn ?? sys.business.phone_number_id}/media`, {
      method: 'POST', headers: { authorization: `Bearer ${opts.token ?? sys.business.access_token}` }, body: form,
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const get = async (path: string, token = sys.business.access_token, method = 'GET') => {
    const res = await fetch(path.startsWith('http') ? path : `${sys.apiUrl}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    return res;
  };

  it('uploads an image, answers its media object, downloads the same bytes with the token, and keeps them sealed at rest', async () => {
    const canary = Buffer.concat([Buffer.from('MEDIACANARY-'), randomBytes(32)]);
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), canary]);
    const up = await upload(png, 'image/png', { filename: 'receipt.png' });
    expect(up.status).toBe(200);
    expect(up.body.id).toMatch(/^\d{16}$/);
    const obj = (await (await get(`/v23.0/${up.body.id}`)).json()) as any;
    expect(obj).toEqual({
      messaging_product: 'whatsapp', url: expect.stringMatching(new RegExp(`/media/download/${up.body.id}$`)), mime_type: 'image/png',
      sha256: createHash('sha256').update(png).digest('base64'), file_size: png.length, id: up.body.id,
    });
    const dl = await get(obj.url);
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await dl.arrayBuffer()).equals(png)).toBe(true);
    // Sealed at rest: neither the bytes nor the file name appear in Redis.
    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    const all = [...dump].map(([k, v]) => `${k}=${v}`).join('\n');
    expect(all).not.toContain('MEDIACANARY-');
    expect(all).not.toContain('receipt.png');
    // It expires with the business's retention.
    const ttl = await sys.ctx.redis.pttl(sys.ctx.keys.media(up.body.id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30 * 86_400_000);
  });

  it('only the owning business reaches a media id; others get the answer an unknown id gets', async () => {
    const up = await upload(Buffer.from('hello'), 'text/plain');
    const foreign = await get(`/v23.0/${up.body.id}`, other.access_token);
    const unknown = await get('/v23.0/1234567890123456', other.access_token);
    expect(foreign.status).toBe(unknown.status);
    expect(((await foreign.json()) as any).error.code).toBe(100);
    expect((await get(`/media/download/${up.body.id}`, other.access_token)).status).toBe(400);
    expect((await get(`/v23.0/${up.body.id}`, other.access_token, 'DELETE')).status).toBe(400);
    expect((await get(`/media/download/${up.body.id}`, 'EAASnot-a-token')).status).toBe(401);
    // Still there for its owner.
    expect((await get(`/v23.0/${up.body.id}`)).status).toBe(200);
  });

  it('refuses unsupported types, oversized files and malformed uploads with the Graph envelope, storing nothing', async () => {
    const before = (await dumpPrefix(sys.redisUrl, sys.prefix)).size;
    const exe = await upload(Buffer.from('MZ'), 'application/x-msdownload');
    expect(exe).toMatchObject({ status: 400, body: { error: { code: 131053 } } });
    const big = await upload(Buffer.alloc((5 << 20) + 1, 1), 'image/jpeg');
    expect(big).toMatchObject({ status: 400, body: { error: { code: 131053 } } });
    expect(big.body.error.error_data.details).toMatch(/image files are at most 5242880 bytes/);
    const noProduct = await upload(Buffer.from('x'), 'text/plain', { product: 'sms' });
    expect(noProduct).toMatchObject({ status: 400, body: { error: { code: 100 } } });
    const json = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/media`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' }, body: '{}',
    });
    expect(json.status).toBe(400);
    const foreignNumber = await upload(Buffer.from('x'), 'text/plain', { pn: other.phone_number_id });
    expect(foreignNumber.body.error.code).toBe(100);
    expect((await dumpPrefix(sys.redisUrl, sys.prefix)).size).toBe(before);
  });

  it('sends an image by its uploaded id: the device decrypts it and shows the same file; the transport saw only ciphertext', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557950001');
    await openWindows(sys, [wa]);
    const canary = Buffer.concat([Buffer.from('ATTACHCANARY-'), randomBytes(64)]);
    const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), canary]);
    const up = await upload(jpeg, 'image/jpeg');
    const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: wa, type: 'image', image: { id: up.body.id, caption: 'your receipt' } }),
    });
    expect(res.status).toBe(200);
    const wamid = ((await res.json()) as any).messages[0].id as string;
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered');
    const shown = (await deviceMessages(sys.platformUrl, wa)).find((m) => m.id === wamid) as any;
    expect(shown).toMatchObject({ type: 'image', image: { id: up.body.id, caption: 'your receipt', mime_type: 'image/jpeg', sha256: createHash('sha256').update(jpeg).digest('base64'), file_size: jpeg.length } });
    expect(JSON.stringify(shown)).not.toMatch(/"key"|pointer/);
    // The transport carried the attachment, but never the file itself nor its key in the clear.
    expect(traffic.some((b) => b.length > jpeg.length)).toBe(true);
    expect(traffic.some((b) => b.includes(canary.subarray(0, 24)))).toBe(false);
    expect(traffic.some((b) => b.includes(Buffer.from('ATTACHCANARY-')))).toBe(false);

    // Wrong kind, unknown id: refused at the API, nothing sent.
    const wrong = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: wa, type: 'audio', audio: { id: up.body.id } }),
    });
    expect(((await wrong.json()) as any).error).toMatchObject({ code: 100 });
    const unknown = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: wa, type: 'image', image: { id: '9999999999999999' } }),
    });
    expect(((await unknown.json()) as any).error.error_data.details).toMatch(/not a media id of this business/);
  }, 60_000);

  it('carries a user\'s file to the business: the webhook names a media id whose bytes are the file; the transport saw only ciphertext', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557950002');
    const canary = Buffer.concat([Buffer.from('INBOUNDMEDIA-'), randomBytes(48)]);
    const photo = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), canary]);
    const before = traffic.length;
    const res = await fetch(`${sys.platformUrl}/sim/devices/${wa}/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: sys.business.display_phone_number, type: 'image', image: { data: photo.toString('base64'), mime_type: 'image/jpeg', caption: 'the broken part' } }),
    });
    const { id } = (await res.json()) as { id: string };
    await waitFor(() => sys.receiver.messages().some((m) => m.id === id), 'the business got the message');
    const got = sys.receiver.messages().find((m) => m.id === id) as any;
    expect(got).toMatchObject({ type: 'image', image: { caption: 'the broken part', mime_type: 'image/jpeg', sha256: createHash('sha256').update(photo).digest('base64'), id: expect.stringMatching(/^\d{16}$/) } });
    expect(JSON.stringify(got)).not.toMatch(/attachment|"key"/);
    // The business fetches it like an uploaded one.
    const obj = (await (await get(`/v23.0/${got.image.id}`)).json()) as any;
    expect(obj).toMatchObject({ mime_type: 'image/jpeg', file_size: photo.length });
    expect(Buffer.from(await (await get(obj.url)).arrayBuffer()).equals(photo)).toBe(true);
    // Nowhere in what reached the transport from the router, nor in Redis, is the file in the clear.
    expect(traffic.slice(before).some((b) => b.includes(Buffer.from('INBOUNDMEDIA-')))).toBe(false);
    const dump = [...(await dumpPrefix(sys.redisUrl, sys.prefix))].map(([k, v]) => `${k}=${v}`).join('\n');
    expect(dump).not.toContain('INBOUNDMEDIA-');
  }, 60_000);

  it('erasing a user deletes the files they sent (an erase request, or the end of the conversation)', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557950003');
    const photo = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), randomBytes(500)]);
    const res = await fetch(`${sys.platformUrl}/sim/devices/${wa}/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: sys.business.display_phone_number, type: 'image', image: { data: photo.toString('base64'), mime_type: 'image/jpeg' } }),
    });
    const { id } = (await res.json()) as { id: string };
    await waitFor(() => sys.receiver.messages().some((m) => m.id === id), 'the business got the photo');
    const mediaId = (sys.receiver.messages().find((m) => m.id === id) as any).image.id as string;
    expect((await get(`/v23.0/${mediaId}`)).status).toBe(200);
    const erase = await fetch(`${sys.apiUrl}/admin/businesses/${sys.business.business_id}/users/${wa}`, { method: 'DELETE', headers: { authorization: `Bearer ${sys.adminToken}` } });
    expect(erase.status).toBe(200);
    expect((await get(`/v23.0/${mediaId}`)).status).toBe(400);
    expect(await sys.ctx.redis.exists(sys.ctx.keys.media(mediaId))).toBe(0);
  }, 60_000);

  it('deletes a media id: gone for its owner too', async () => {
    const up = await upload(Buffer.from('%PDF-1.4 test'), 'application/pdf', { filename: 'invoice.pdf' });
    const del = await get(`/v23.0/${up.body.id}`, sys.business.access_token, 'DELETE');
    expect(await del.json()).toEqual({ success: true });
    expect((await get(`/v23.0/${up.body.id}`)).status).toBe(400);
    expect(await sys.ctx.redis.exists(sys.ctx.keys.media(up.body.id))).toBe(0);
  });
});
