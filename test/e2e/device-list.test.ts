import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { readTraceLines } from '../../src/trace/store.ts';
import { createDevice, deviceMessages, sendTemplate, sendText, startSystem, userWrites, waitFor, type TestSystem } from '../helpers/system.ts';

const post = async (url: string, body: unknown) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};

/**
 * The router encrypts only to devices on a list signed by the user's primary, pinned on first contact: a
 * device the transport adds on its own (a ghost), a list signed by another key, or an older list served again
 * get nothing, and the business is not told the message went anywhere. Real router, transport and libsignal.
 */
describe('signed device lists, end to end', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_BUNDLE_RETRY_MS: '200' } });
  });
  afterAll(async () => sys?.close());

  const statusesOf = (wamid: string) => sys.receiver.statuses().filter((s) => s.id === wamid).map((s) => s.status);
  const delivered = (wamid: string) => waitFor(() => statusesOf(wamid).includes('delivered'), `delivered ${wamid}`);
  const view = async (waId: string, device = 1) =>
    ((await (await fetch(`${sys.platformUrl}/sim/devices/${waId}/messages?device=${device}`)).json()) as { messages: unknown[] }).messages;
  /** Waits until the conversation of `wamid` has had its keys refused `n` times (its trace's BUNDLE_FAILED). */
  const refusedTimes = (wamid: string, n: number) => waitFor(async () => {
    const conv = conversationOfWamid(wamid)!;
    const lines = await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv);
    return lines.filter((l) => l.includes('"BUNDLE_FAILED"')).length >= n;
  }, `keys refused ${n} times`, 30_000, 50);

  it('a ghost on the list before first contact: nothing is sent to anyone, and no status says otherwise', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558500001');
    const ghost = (await post(`${sys.platformUrl}/sim/devices/${waId}/ghost`, {})).json.device_id as number;
    expect(ghost).toBeGreaterThan(1);
    const wamid = await sendTemplate(sys, waId, 'hello_world');
    // The router keeps trying (the list never verifies while the ghost is on it).
    await refusedTimes(wamid, 3);
    expect(await view(waId, 1)).toEqual([]);
    expect(await view(waId, ghost)).toEqual([]);
    expect(statusesOf(wamid)).toEqual([]);
  });

  it('after first contact: a forged list and a rolled-back list are refused until the genuine one is served again', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558500002');
    await delivered(await sendTemplate(sys, waId, 'first_contact'));
    // The primary links a companion and unlinks it: the list's counter is now 3, and an older genuine list exists.
    const companion = (await post(`${sys.platformUrl}/sim/devices/${waId}/linked`, {})).json.device_id as number;
    await fetch(`${sys.platformUrl}/sim/devices/${waId}/linked/${companion}`, { method: 'DELETE' });
    await delivered(await sendTemplate(sys, waId, 'with_counter_3'));

    for (const kind of ['forged', 'rollback'] as const) {
      expect((await post(`${sys.platformUrl}/sim/devices/${waId}/device-list-fault`, { kind })).status).toBe(200);
      // A repair (the phone lost its sessions) makes the router fetch the list again before it re-encrypts.
      await post(`${sys.platformUrl}/sim/devices/${waId}/forget-sessions`, {});
      const before = (await view(waId)).length;
      const wamid = await sendTemplate(sys, waId, `during_${kind}`);
      const failedBefore = (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conversationOfWamid(wamid)!), conversationOfWamid(wamid)!))
        .filter((l) => l.includes('"BUNDLE_FAILED"')).length;
      await refusedTimes(wamid, failedBefore + 2);
      expect((await view(waId)).length, kind).toBe(before);
      expect(statusesOf(wamid), kind).not.toContain('delivered');
      // The genuine list again: the message goes out.
      await post(`${sys.platformUrl}/sim/devices/${waId}/device-list-fault`, { kind: null });
      await delivered(wamid);
    }
  });

  it('a linked companion that writes first reaches the business from the user and opens the window; a ghost that writes reaches nobody', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558500003');
    const companion = (await post(`${sys.platformUrl}/sim/devices/${waId}/linked`, {})).json.device_id as number;
    const id = await userWrites(sys, waId, 'from the laptop', { device: companion });
    const got = sys.receiver.messages().find((m) => m.id === id)!;
    expect(got).toMatchObject({ from: waId, type: 'text', text: { body: 'from the laptop' } });
    // The window is open: a free-form reply is accepted and reaches the phone.
    const reply = await sendText(sys, waId, 'answer to the laptop');
    await delivered(reply);
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toEqual(['answer to the laptop']);

    // The transport adds a device of its own and writes from it: the list it serves does not verify.
    const ghost = (await post(`${sys.platformUrl}/sim/devices/${waId}/ghost`, {})).json.device_id as number;
    const res = await post(`${sys.platformUrl}/sim/devices/${waId}/messages`, { to: sys.business.display_phone_number, text: 'ghost writing', device: ghost });
    expect(res.status).toBe(200);
    const ghostId = res.json.id as string;
    const conv = conversationOfWamid(reply)!;
    await waitFor(async () => (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv)).some((l) => l.includes('unverified_device')),
      'the ghost\'s message refused', 30_000, 50);
    expect(sys.receiver.messages().some((m) => m.id === ghostId)).toBe(false);
  });
});
