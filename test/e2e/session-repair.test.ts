import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, deviceStats, waitFor } from '../helpers/devices.ts';
import { openWindows, sendTemplate, sendText, startSystem, type TestSystem } from '../helpers/system.ts';
import { readTraceLines } from '../../src/trace/store.ts';

const post = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('session repair, prekeys and TTL, end to end', () => {
  let sys: TestSystem;
  let n = 0;
  const phone = () => `+155570${String(++n).padStart(5, '0')}`;
  const faults = (f: object) => post(`${sys.platformUrl}/sim/faults`, f);
  const delivered = (wamid: string) => waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), `delivered ${wamid}`);
  const trace = async (wamid: string) => {
    const { conversationOfWamid } = await import('../../src/runtime/ids.ts');
    return (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conversationOfWamid(wamid)!), conversationOfWamid(wamid)!)).map((l) => JSON.parse(l));
  };

  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '1000' } });
  });
  afterAll(async () => sys?.close());
  beforeEach(async () => {
    await faults({});
  });

  it('a corrupted copy makes the device ask for a retry; the router archives, renegotiates and re-encrypts', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    await openWindows(sys, [waId]);
    await delivered(await sendText(sys, waId, 'first, clean'));
    await faults({ corrupt_next: 1 });
    const wamid = await sendText(sys, waId, 'second, corrupted on the wire');
    await delivered(wamid);
    expect((await deviceStats(sys.platformUrl, waId)).failures.invalid_message).toBe(1);
    const shown = await deviceMessages(sys.platformUrl, waId);
    expect(shown.map((m) => m.text?.body)).toEqual(['first, clean', 'second, corrupted on the wire']);
    expect((await deviceStats(sys.platformUrl, waId)).key_reuse).toBe(0);
    const t = await trace(wamid);
    const repair = t.find((l) => l.event.type === 'RETRY_REQUESTED');
    expect(repair).toMatchObject({ event: { wamid, ratchetMatches: true }, state: 'negotiating' });
    expect(repair.commands).toEqual(expect.arrayContaining([{ type: 'session.archive' }, { type: 'bundle.fetch' }]));
    // The first session was the one the user opened by writing; the repair fetched the business's own bundle.
    expect(t.filter((l) => l.event.type === 'BUNDLE_FETCHED')).toHaveLength(1);
  });

  it('a device that lost its sessions gets the message again in a fresh session', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    await openWindows(sys, [waId]);
    await delivered(await sendText(sys, waId, 'before'));
    await post(`${sys.platformUrl}/sim/devices/${waId}/forget-sessions`, {});
    const wamid = await sendText(sys, waId, 'after the restore');
    await delivered(wamid);
    const stats = await deviceStats(sys.platformUrl, waId);
    expect(stats.failures.no_session).toBeGreaterThanOrEqual(1);
    expect(stats.identity_changes).toBe(0);
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toEqual(['before', 'after the restore']);
  });

  it("a reinstalled device's new identity is accepted from the directory and reported to the business", async () => {
    const number = phone();
    const waId = await createDevice(sys.platformUrl, number);
    await openWindows(sys, [waId]);
    await delivered(await sendText(sys, waId, 'hello'));
    await post(`${sys.platformUrl}/sim/devices`, { phone: number, reinstall: true });
    const wamid = await sendText(sys, waId, 'welcome back');
    await delivered(wamid);
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toContain('welcome back');
    const notice = sys.receiver.messages().find((m) => m.from === waId && m.type === 'system');
    expect(notice).toMatchObject({ system: { type: 'customer_identity_changed', identity: expect.any(String) }, identity: { hash: expect.any(String) } });
    const t = await trace(wamid);
    const changed = t.find((l) => l.event.type === 'BUNDLE_FETCHED' && l.event.identityChanged);
    expect(changed.commands).toContainEqual({ type: 'webhook.identity_changed', at: changed.event.at });
  });

  it('works with a bundle that has no one-time prekey left (the last-resort Kyber key)', async () => {
    const res = await post(`${sys.platformUrl}/sim/devices`, { phone: phone(), prekeys: 0 });
    const { wa_id: waId } = (await res.json()) as { wa_id: string };
    const bundle = (await (await fetch(`${sys.platformUrl}/v1/keys/${waId}`)).json()) as Record<string, unknown>;
    expect(bundle.prekey).toBeUndefined();
    // A template needs no open window, so the business starts the session: from the last-resort bundle.
    await delivered(await sendTemplate(sys, waId, 'order_update'));
    expect((await deviceMessages(sys.platformUrl, waId))[0]).toMatchObject({ type: 'template', template: { name: 'order_update' } });
  });

  it('gives up on a message after 5 repairs: it fails with 131026 instead of looping', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    await openWindows(sys, [waId]);
    await delivered(await sendText(sys, waId, 'ok'));
    await faults({ corrupt: 1 });
    const wamid = await sendText(sys, waId, 'always corrupted');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'failed'), 'the failure');
    const t = await trace(wamid);
    expect(t.filter((l) => l.event.type === 'RETRY_REQUESTED' && l.event.wamid === wamid).length).toBeGreaterThanOrEqual(6);
    expect(sys.receiver.statuses().find((s) => s.id === wamid && s.status === 'failed')!.errors).toEqual([expect.objectContaining({ code: 131026 })]);
  });

  it('retransmits through a lossy transport until delivered, each shown once, in order', async () => {
    const waId = await createDevice(sys.platformUrl, phone());
    await openWindows(sys, [waId]);
    await delivered(await sendText(sys, waId, 'warm-up'));
    await faults({ drop: 0.5, duplicate: 0.3, reorder: true });
    const wamids: string[] = [];
    for (let i = 0; i < 10; i++) wamids.push(await sendText(sys, waId, `lossy ${i}`));
    for (const w of wamids) await delivered(w);
    const shown = await deviceMessages(sys.platformUrl, waId);
    expect(shown.map((m) => m.text?.body)).toEqual(['warm-up', ...Array.from({ length: 10 }, (_, i) => `lossy ${i}`)]);
    expect((await deviceStats(sys.platformUrl, waId)).key_reuse).toBe(0);
  });
});

describe('TTL expiry', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETENTION: '2s', SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '600' } });
  });
  afterAll(async () => sys?.close());

  it('a message never acknowledged fails with 131026 when its TTL runs out, and later messages are not held behind it', async () => {
    const waId = await createDevice(sys.platformUrl, '+15557799999');
    await openWindows(sys, [waId]);
    await post(`${sys.platformUrl}/sim/faults`, { drop: 1 });
    const lost = await sendText(sys, waId, 'never arrives', { biz_opaque_callback_data: 'lost-one' });
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === lost && s.status === 'failed'), 'the failed status', 30_000);
    expect(await deviceMessages(sys.platformUrl, waId)).toEqual([]);
    const failed = sys.receiver.statuses().find((s) => s.id === lost && s.status === 'failed')!;
    expect(failed).toMatchObject({ recipient_id: waId, biz_opaque_callback_data: 'lost-one', errors: [{ code: 131026, title: 'Message undeliverable' }] });
    await post(`${sys.platformUrl}/sim/faults`, {});
    const next = await sendText(sys, waId, 'after the failure');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === next && s.status === 'delivered'), 'the next message delivered', 30_000);
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toEqual(['after the failure']);
    expect(sys.receiver.statuses().filter((s) => s.id === lost).map((s) => s.status)).not.toContain('delivered');
  });
});
