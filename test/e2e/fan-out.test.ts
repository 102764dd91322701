import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { readTraceLines } from '../../src/trace/store.ts';
import { startOwnRedisServer, type OwnRedis } from '../helpers/redis-server.ts';
import { workerProcesses } from '../helpers/worker-processes.ts';
import { createDevice, deviceMessages, deviceStats, openWindows, sendText, startSystem, userWrites, waitFor, type TestSystem } from '../helpers/system.ts';

const json = async (url: string, method: string, body?: unknown) => {
  const res = await fetch(url, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};
const link = async (sys: TestSystem, waId: string) => (await json(`${sys.platformUrl}/sim/devices/${waId}/linked`, 'POST', {})).json.device_id as number;
const unlink = async (sys: TestSystem, waId: string, device: number) => expect((await json(`${sys.platformUrl}/sim/devices/${waId}/linked/${device}`, 'DELETE')).status).toBe(200);
const faults = (sys: TestSystem, f: Record<string, unknown>) => json(`${sys.platformUrl}/sim/faults`, 'POST', f);
const bodies = async (sys: TestSystem, waId: string, device: number) => (await deviceMessages(sys.platformUrl, waId, device)).map((m) => m.text?.body);
/** The machine events of a message's conversation, as its trace recorded them. */
const traceEvents = async (sys: TestSystem, wamid: string) => {
  const conv = conversationOfWamid(wamid)!;
  return (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv)).map((l) => (JSON.parse(l) as { event: Record<string, unknown> }).event);
};

/**
 * A message to a user reaches every device the user's signed list names (docs/multi-device.md): each device
 * shows it once and in order, the business hears `sent`, `delivered` (first device) and `read` (any device)
 * once each, and the router follows the user's devices as they are linked, unlinked and reinstalled (the
 * transport's 409 and 410). Real router, transport process and libsignal.
 */
describe('fan-out to every device of a user', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '1000', SEALPOST_BUNDLE_RETRY_MS: '200' } });
  });
  afterAll(async () => {
    await faults(sys, { drop: 0, duplicate: 0, reorder: false });
    await sys?.close();
  });

  const statusesOf = (wamid: string) => sys.receiver.statuses().filter((s) => s.id === wamid).map((s) => s.status);

  it('every message reaches the phone and two companions, once each and in order; statuses once each', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558600001');
    const laptop = await link(sys, waId);
    const tablet = await link(sys, waId);
    await openWindows(sys, [waId]);
    const sent: string[] = [];
    const wamids: string[] = [];
    for (let i = 0; i < 8; i++) {
      sent.push(`m${i}`);
      wamids.push(await sendText(sys, waId, `m${i}`));
    }
    await waitFor(async () => (await Promise.all([1, laptop, tablet].map((d) => bodies(sys, waId, d)))).every((b) => b.length === sent.length), 'every device to show every message');
    for (const d of [1, laptop, tablet]) expect(await bodies(sys, waId, d), `device ${d}`).toEqual(sent);
    // The conversation keeps each message until all three devices acknowledged it, then forgets it.
    await waitFor(async () => {
      const events = await traceEvents(sys, wamids[0]!);
      return wamids.every((w) => events.filter((e) => e.type === 'DELIVERED' && e.wamid === w).length >= 3);
    }, 'a receipt from each device');
    await waitFor(() => wamids.every((w) => statusesOf(w).includes('delivered')), 'delivered statuses');
    for (const w of wamids) expect(statusesOf(w)).toEqual(['sent', 'delivered']);
    // (The first encryption, for the phone alone, met a 409: the router learned of the companions when the
    // phone wrote first, and fetched their keys once the transport asked for them.)
    const encrypted = (await traceEvents(sys, wamids[0]!)).findLast((e) => e.type === 'ENCRYPTED' && e.wamid === wamids[0]);
    expect(encrypted?.devices).toEqual([1, laptop, tablet]);
    // The inspector shows the three devices, each listed with a session, and no message still awaiting one.
    const inspected = await fetch(`${sys.apiUrl}/admin/conversations/${conversationOfWamid(wamids[0]!)}`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
    const data = (await inspected.json()) as { devices: unknown[]; messages: { wamid: string; awaiting_devices: number[] | null }[] };
    expect(data.devices).toEqual([1, laptop, tablet].map((device_id) => ({ device_id, listed: true, session: true })));
    for (const w of wamids) expect(data.messages.find((m) => m.wamid === w)?.awaiting_devices ?? null).toBeNull();

    // Read on the laptop: `read` once, and again on the phone: nothing more.
    expect((await json(`${sys.platformUrl}/sim/devices/${waId}/read`, 'POST', { message_id: wamids[0], device: laptop })).status).toBe(200);
    await waitFor(() => statusesOf(wamids[0]!).includes('read'), 'read');
    expect((await json(`${sys.platformUrl}/sim/devices/${waId}/read`, 'POST', { message_id: wamids[0], device: 1 })).status).toBe(200);
    await waitFor(async () => (await traceEvents(sys, wamids[0]!)).filter((e) => e.type === 'READ').length >= 2, 'both reads reach the conversation');
    expect(statusesOf(wamids[0]!)).toEqual(['sent', 'delivered', 'read']);

    // The business reads what the tablet wrote: the read receipt goes to all three devices.
    const fromTablet = await userWrites(sys, waId, 'from the tablet', { device: tablet });
    const mark = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', status: 'read', message_id: fromTablet }),
    });
    expect(mark.status).toBe(200);
    await waitFor(async () => {
      const r = await json(`${sys.platformUrl}/sim/devices/${waId}/sent?device=${tablet}`, 'GET');
      return (r.json.messages as { id: string; read: boolean }[]).some((m) => m.id === fromTablet && m.read);
    }, 'the tablet to see its message read');
    const receipt = (await traceEvents(sys, wamids[0]!)).find((e) => e.type === 'ENCRYPTED' && String(e.wamid) !== wamids[0] && !wamids.includes(String(e.wamid)));
    expect(receipt?.devices).toEqual([1, laptop, tablet]);
  });

  it('links and unlinks while messages are in flight: the transport\'s 409 brings the new device in, the gone one out, nothing stalls', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558600002');
    const old = await link(sys, waId);
    await openWindows(sys, [waId]);
    // The router knows the phone and the old companion (a first message reached both).
    const warm = await sendText(sys, waId, 'w');
    await waitFor(async () => (await bodies(sys, waId, old)).length === 1 && statusesOf(warm).includes('delivered'), 'the first message on both devices');
    await faults(sys, { drop: 0.3, duplicate: 0.2, reorder: true });
    const before = [await sendText(sys, waId, 'a0'), await sendText(sys, waId, 'a1')];
    // The user links a laptop and unlinks the old companion while a0 and a1 may still be retransmitted.
    const laptop = await link(sys, waId);
    await unlink(sys, waId, old);
    const after: string[] = [];
    for (let i = 2; i < 6; i++) after.push(await sendText(sys, waId, `a${i}`));
    const all = [...before, ...after];
    await waitFor(() => all.every((w) => statusesOf(w).includes('delivered')), 'every message delivered', 60_000);
    // (The laptop may also show a0 or a1, if they were still owed when the router learned of it: wait for a2-a5.)
    await waitFor(async () => {
      const onLaptop = await bodies(sys, waId, laptop);
      return (await bodies(sys, waId, 1)).length === 7 && ['a2', 'a3', 'a4', 'a5'].every((b) => onLaptop.includes(b));
    }, 'the phone and the laptop to show their messages', 60_000);
    await faults(sys, { drop: 0, duplicate: 0, reorder: false });
    expect(await bodies(sys, waId, 1)).toEqual(['w', 'a0', 'a1', 'a2', 'a3', 'a4', 'a5']);
    // The laptop shows what was accepted after it was linked, in order (and a0/a1 too if they were still owed).
    const onLaptop = await bodies(sys, waId, laptop);
    expect(onLaptop.slice(-4)).toEqual(['a2', 'a3', 'a4', 'a5']);
    expect(['a0', 'a1', 'a2', 'a3', 'a4', 'a5'].filter((b) => onLaptop.includes(b))).toEqual(onLaptop);
    // The unlinked companion never gets a message accepted after it left.
    for (const b of await bodies(sys, waId, old)) expect(['w', 'a0', 'a1']).toContain(b);
    const events = await traceEvents(sys, all[0]!);
    const refusals = events.filter((e) => e.type === 'TRANSPORT_REJECTED' && e.reason === 'devices');
    // The router learns of the laptop only from a refusal. A retransmit between the link and the unlink may be
    // refused for the laptop alone; the list fetched then may already lack the old companion, which then leaves
    // without a refusal of its own. Either way the last encryption names the phone and the laptop only.
    expect(refusals.some((e) => ((e.missing ?? []) as number[]).includes(laptop))).toBe(true);
    expect(events.findLast((e) => e.type === 'ENCRYPTED')?.devices).toEqual([1, laptop]);
    for (const w of all) expect(statusesOf(w).filter((s) => s === 'delivered')).toHaveLength(1);
    for (const w of all) expect(statusesOf(w)).not.toContain('failed');
  });

  it('a reinstalled companion (410 stale): its session is rebuilt and it gets the message, which keeps its place on the other devices', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558600003');
    const laptop = await link(sys, waId);
    await openWindows(sys, [waId]);
    const first = await sendText(sys, waId, 'b0');
    await waitFor(async () => (await bodies(sys, waId, laptop)).length === 1, 'the laptop to show b0');
    const reinstall = await json(`${sys.platformUrl}/sim/devices/${waId}/linked/${laptop}/reinstall`, 'POST', {});
    expect(reinstall.status).toBe(200);
    const second = await sendText(sys, waId, 'b1');
    await waitFor(async () => (await bodies(sys, waId, laptop)).length === 2 && (await bodies(sys, waId, 1)).length === 2, 'the reinstalled laptop and the phone to show b1');
    expect(await bodies(sys, waId, laptop)).toEqual(['b0', 'b1']);
    expect(await bodies(sys, waId, 1)).toEqual(['b0', 'b1']);
    const events = await traceEvents(sys, second);
    expect(events.some((e) => e.type === 'TRANSPORT_REJECTED' && e.reason === 'devices' && ((e.stale ?? []) as number[]).includes(laptop))).toBe(true);
    await waitFor(() => statusesOf(first).includes('delivered') && statusesOf(second).includes('delivered'), 'b0 and b1 delivered');
    expect(statusesOf(first)).toEqual(['sent', 'delivered']);
    expect(statusesOf(second)).toEqual(['sent', 'delivered']);
    expect((await deviceStats(sys.platformUrl, waId, laptop)).key_reuse).toBe(0);
  });

  it('a ghost added after first contact: the transport refuses messages that leave it out, the router never encrypts to it, and no status is reported', async () => {
    const waId = await createDevice(sys.platformUrl, '+15558600004');
    const laptop = await link(sys, waId);
    await openWindows(sys, [waId]);
    const first = await sendText(sys, waId, 'c0');
    await waitFor(async () => (await bodies(sys, waId, laptop)).length === 1 && statusesOf(first).includes('delivered'), 'c0 on both devices');
    const ghost = (await json(`${sys.platformUrl}/sim/devices/${waId}/ghost`, 'POST', {})).json.device_id as number;
    const second = await sendText(sys, waId, 'c1');
    // 409 (the ghost is missing), the list fetched again does not verify (the ghost is not signed in): the keys
    // are refused, again and again with the backoff.
    await waitFor(async () => (await traceEvents(sys, second)).filter((e) => e.type === 'BUNDLE_FAILED').length >= 2, 'the keys refused twice', 30_000);
    const events = await traceEvents(sys, second);
    expect(events.some((e) => e.type === 'TRANSPORT_REJECTED' && e.reason === 'devices' && ((e.missing ?? []) as number[]).includes(ghost))).toBe(true);
    expect(events.filter((e) => e.type === 'ENCRYPTED').every((e) => !(e.devices as number[]).includes(ghost))).toBe(true);
    expect(await bodies(sys, waId, ghost)).toEqual([]);
    expect(await bodies(sys, waId, 1)).toEqual(['c0']);
    expect(statusesOf(second)).toEqual([]);
  });
});

describe('fan-out through a lossy transport and workers killed with SIGKILL', () => {
  let redis: OwnRedis | undefined;
  let sys: TestSystem | undefined;
  const workers = workerProcesses(() => sys!.childEnv());
  let killer: ReturnType<typeof workers.rolling> | undefined;

  afterAll(async () => {
    killer?.stop();
    await workers.stopAll();
    await sys?.close();
    await redis?.stop();
  });

  it('three devices per user each show every message once, in order', async () => {
    redis = await startOwnRedisServer();
    // A killed worker's claims lapse with its lease: 3 s here instead of 15 (what the conversations it held wait).
    sys = await startSystem({
      workers: false, redisUrl: redis.url,
      env: { SEALPOST_RETRANSMIT_BASE_MS: '400', SEALPOST_RETRANSMIT_MAX_MS: '1500', SEALPOST_BUNDLE_RETRY_MS: '300', SEALPOST_LEASE_MS: '3000' },
    });
    const s = sys;
    killer = workers.rolling(2);
    const users = await Promise.all(Array.from({ length: 12 }, (_, i) => createDevice(s.platformUrl, `+1555861${String(i).padStart(4, '0')}`)));
    const devices = new Map<string, number[]>();
    for (const u of users) devices.set(u, [1, await link(s, u), await link(s, u)]);
    await openWindows(s, users);
    // The oldest worker is killed every 2.5 s, five times, while messages are being sent and retransmitted.
    killer.killEvery(2500, 5);
    await faults(s, { drop: 0.2, duplicate: 0.1, reorder: true });
    const sent = new Map<string, string[]>();
    const wamids: string[] = [];
    const byUser = new Map<string, string[]>();
    await Promise.all(users.map(async (waId, u) => {
      const list: string[] = [];
      byUser.set(waId, []);
      for (let i = 0; i < 10; i++) {
        list.push(`u${u}-m${i}`);
        const w = await sendText(s, waId, `u${u}-m${i}`);
        wamids.push(w);
        byUser.get(waId)!.push(w);
      }
      sent.set(waId, list);
    }));
    let lastProgress = '';
    const waitAll = waitFor(async () => {
      const counts: string[] = [];
      for (const u of users) {
        for (const d of devices.get(u)!) counts.push(`${u.slice(-3)}/${d}:${(await deviceMessages(s.platformUrl, u, d)).length}`);
      }
      if (process.env.DEBUG_FANOUT && counts.join(' ') !== lastProgress) console.log((lastProgress = counts.join(' ')));
      return counts.every((c) => c.endsWith(':10'));
    }, 'every device of every user to show every message', 240_000, 500);
    // On a timeout: what the stuck devices hold, and the tail of their conversation's trace.
    await waitAll.catch(async (e) => {
      for (const u of users) {
        for (const d of devices.get(u)!) {
          const n = (await deviceMessages(s.platformUrl, u, d)).length;
          if (n === 10) continue;
          console.log('STUCK', u, d, n, JSON.stringify(await deviceStats(s.platformUrl, u, d)));
          const conv = conversationOfWamid(byUser.get(u)![0]!)!;
          const lines = await readTraceLines(s.ctx.redis, s.ctx.keys.trace(conv), conv);
          for (const l of lines.slice(-25)) console.log('  ', l.slice(0, 400));
        }
      }
      throw e;
    });
    killer.stop();
    await faults(s, { drop: 0, duplicate: 0, reorder: false });
    for (const u of users) {
      for (const d of devices.get(u)!) {
        const shown = await deviceMessages(s.platformUrl, u, d);
        expect(shown.map((m) => m.text?.body), `${u} device ${d}`).toEqual(sent.get(u));
        expect((await deviceStats(s.platformUrl, u, d)).key_reuse).toBe(0);
      }
    }
    await waitFor(() => wamids.every((w) => s.receiver.statuses().some((x) => x.id === w && x.status === 'delivered')), 'a delivered status for every message', 60_000);
    // (Webhooks are at least once: a worker killed between sending one and recording it sends it again.)
    for (const w of wamids) expect(s.receiver.statuses().filter((x) => x.id === w).map((x) => x.status)).not.toContain('failed');
    expect(killer.kills()).toBeGreaterThan(0);
  }, 400_000);
});
