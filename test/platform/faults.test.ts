import { afterEach, describe, expect, it } from 'vitest';
import { Faults, REORDER_WINDOW_MS } from '../../src/platform/faults.ts';
import type { Platform } from '../../src/platform/server.ts';
import { call, drainEvents, quietPlatform, registerDevice, seededRandom, TestBusiness } from './helpers.ts';

const BIZ = '15550400400';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

async function setup(seed = 1): Promise<{ biz: TestBusiness; waId: string }> {
  p = quietPlatform({ random: seededRandom(seed) });
  const waId = await registerDevice(p.app, '+15558887777');
  const biz = new TestBusiness(BIZ);
  await biz.startSession(p.app, waId);
  await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload());
  return { biz, waId };
}

describe('transport faults', () => {
  it('drop 1.0 loses envelopes in both directions; {} clears it', async () => {
    const { biz, waId } = await setup();
    expect(await call(p.app, 'POST', '/sim/faults', { drop: 1 })).toEqual({
      status: 200, json: { drop: 1, duplicate: 0, reorder: false, delay_ms: 0, down_for_ms: 0, corrupt: 0, corrupt_next: 0 },
    });
    expect((await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, 'lost'))).status).toBe(202);
    expect((await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'lost too' })).status).toBe(200);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json.decrypted).toBe(0);
    expect(await drainEvents(p.app)).toEqual([]);
    // Both losses are counted, so a test can wait for a drop instead of sleeping.
    expect((await call(p.app, 'GET', '/sim/faults')).json.dropped).toBe(2);

    expect((await call(p.app, 'POST', '/sim/faults', {})).json).toEqual({ drop: 0, duplicate: 0, reorder: false, delay_ms: 0, down_for_ms: 0, corrupt: 0, corrupt_next: 0 });
    await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, 'arrives'));
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json.decrypted).toBe(1);
  });

  it('down_for_ms answers 503 on envelopes and pulls until it ends or is cleared', async () => {
    const { biz, waId } = await setup();
    await call(p.app, 'POST', '/sim/faults', { down_for_ms: 60_000 });
    const faults = (await call(p.app, 'GET', '/sim/faults')).json;
    expect(faults.down_for_ms).toBeGreaterThan(59_000);
    expect(await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, 'x'))).toEqual({ status: 503, json: { error: 'platform_down' } });
    expect(await call(p.app, 'POST', '/v1/events/pull', {})).toEqual({ status: 503, json: { error: 'platform_down' } });
    expect((await call(p.app, 'GET', '/healthz')).status).toBe(200);
    await call(p.app, 'POST', '/sim/faults', {});
    expect((await call(p.app, 'POST', '/v1/events/pull', { wait_ms: 0 })).status).toBe(200);
  });

  it('duplicate 1.0 delivers every envelope twice; the device counts two arrivals', async () => {
    const { biz, waId } = await setup();
    await call(p.app, 'POST', '/sim/faults', { duplicate: 1 });
    const m = await biz.text(waId, 'twice');
    await call(p.app, 'POST', '/v1/envelopes', m);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages).toMatchObject([{ id: m.id, arrivals: 2 }]);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json).toMatchObject({ duplicates: 1, key_reuse: 0 });
    // Events are duplicated too: 2 copies x (2 receipts + 1 session ack).
    const events = await drainEvents(p.app);
    expect(events.filter((e) => e.kind === 'receipt' && e.id === m.id)).toHaveLength(4);
    expect(new Set(events.map((e) => e.event_id)).size).toBe(events.length);
  });

  it('reorder lets later envelopes overtake, and the device still shows them in sequence order', async () => {
    const { biz, waId } = await setup(7);
    await call(p.app, 'POST', '/sim/faults', { reorder: true, delay_ms: 5 });
    const envs = [];
    for (let i = 1; i <= 20; i++) envs.push(await biz.text(waId, `m${i}`));
    await call(p.app, 'POST', '/v1/envelopes', { envelopes: envs });
    await p.state.settled();
    const shown = (await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages;
    expect(shown.map((m: { id: string }) => m.id)).toEqual(envs.map((e) => e.id));
    // With this seed the receipts came back in another order than sent: arrival order differed.
    const order = (await drainEvents(p.app)).flatMap((e) => (e.kind === 'receipt' ? [e.id] : []));
    expect(order).toHaveLength(20);
    expect(order).not.toEqual(envs.map((e) => e.id));
  });

  it('plans deterministically from the injected random source', () => {
    const seq = [0.5, 0.1, 0.3, 0.9];
    const f = new Faults(() => seq.shift() ?? 0, () => 0);
    f.set({ drop: 0.4, duplicate: 0.2, reorder: true, delay_ms: 10 });
    // 0.5 ≥ drop → kept; 0.1 < duplicate → two copies; extra delays 0.3 and 0.9 of the window.
    expect(f.plan()).toEqual([10 + Math.floor(0.3 * REORDER_WINDOW_MS), 10 + Math.floor(0.9 * REORDER_WINDOW_MS)]);
    f.set({});
    expect(f.plan()).toEqual([0]);
  });
});
