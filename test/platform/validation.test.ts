import { afterEach, describe, expect, it } from 'vitest';
import type { Platform } from '../../src/platform/server.ts';
import { call, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

/** Asserts a 4xx with a one-line reason. */
function refused(r: { status: number; json: { error?: unknown } }, status: number, reason?: RegExp): void {
  expect(r.status).toBe(status);
  expect(typeof r.json.error).toBe('string');
  expect(r.json.error).not.toMatch(/\n/);
  if (reason) expect(r.json.error).toMatch(reason);
}

describe('bad input', () => {
  it('refuses bad device registrations', async () => {
    p = quietPlatform();
    refused(await call(p.app, 'POST', '/sim/devices', { phone: '12345' }), 400, /^phone: not an E\.164 number/);
    refused(await call(p.app, 'POST', '/sim/devices', { phone: '+0155512345' }), 400, /E\.164/);
    refused(await call(p.app, 'POST', '/sim/devices', { phone: '+1555abc4567' }), 400, /E\.164/);
    refused(await call(p.app, 'POST', '/sim/devices', {}), 400, /^phone: /);
    refused(await call(p.app, 'POST', '/sim/devices', { phone: '+15551230000', prekeys: -1 }), 400, /^prekeys: /);
    refused(await call(p.app, 'POST', '/sim/devices', { phone: '+15551230000', reinstall: 'yes' }), 400, /^reinstall: /);
  });

  it('refuses malformed envelopes and reports unknown recipients', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15551230001');
    const biz = new TestBusiness('15550600600');
    await biz.startSession(p.app, waId);
    const good = await biz.text(waId, 'ok');
    refused(await call(p.app, 'POST', '/v1/envelopes', { ...good, type: 8 }), 400, /^type: /);
    refused(await call(p.app, 'POST', '/v1/envelopes', { ...good, body: 'not base64!!' }), 400, /^body: not standard base64/);
    refused(await call(p.app, 'POST', '/v1/envelopes', { ...good, id: '' }), 400, /^id: /);
    refused(await call(p.app, 'POST', '/v1/envelopes', { ...good, to: 'a/b' }), 400, /^to: /);
    refused(await call(p.app, 'POST', '/v1/envelopes', { envelopes: [] }), 400, /^envelopes: /);
    refused(await call(p.app, 'POST', '/v1/envelopes', { envelopes: [good, { ...good, type: 'x' }] }), 400, /^envelopes\.1\.type: /);
    expect(await call(p.app, 'POST', '/v1/envelopes', { ...good, to: '15559990000' })).toEqual({ status: 404, json: { error: 'unknown_recipient', to: '15559990000' } });
    const batch = await call(p.app, 'POST', '/v1/envelopes', { envelopes: [good, { ...good, id: 'wamid.other', to: '15559990000' }] });
    expect(batch).toEqual({ status: 202, json: { accepted: 1, rejected: [{ id: 'wamid.other', error: 'unknown_recipient' }] } });
  });

  it('refuses bad pulls, acks, faults and bodies', async () => {
    p = quietPlatform();
    refused(await call(p.app, 'POST', '/v1/events/pull', { max: 0 }), 400, /^max: /);
    refused(await call(p.app, 'POST', '/v1/events/pull', { wait_ms: -1 }), 400, /^wait_ms: /);
    refused(await call(p.app, 'POST', '/v1/events/ack', {}), 400, /^event_ids: /);
    refused(await call(p.app, 'POST', '/sim/faults', { drop: 2 }), 400, /^drop: /);
    refused(await call(p.app, 'POST', '/sim/faults', { flaky: true }), 400);
    const notJson = await p.app.inject({ method: 'POST', url: '/v1/events/ack', headers: { 'content-type': 'application/json' }, payload: '{"event_ids":' });
    refused({ status: notJson.statusCode, json: notJson.json() }, 400);
    const text = await p.app.inject({ method: 'POST', url: '/v1/events/ack', headers: { 'content-type': 'text/plain' }, payload: 'hi' });
    refused({ status: text.statusCode, json: text.json() }, 400, /^body: /);
    p.state.queue.push({ kind: 'spam_report', from: '15551230003', to: '15550600600', timestamp: '1700000000' });
    const empty = await p.app.inject({ method: 'POST', url: '/v1/events/pull', headers: { 'content-type': 'application/json' }, payload: '' });
    expect(empty.statusCode).toBe(200);
    expect(empty.json().events).toHaveLength(1);
  });

  it('answers 404 for unknown devices, routes and addresses', async () => {
    p = quietPlatform();
    refused(await call(p.app, 'GET', '/sim/devices/15550000009/messages'), 404, /^unknown_device$/);
    refused(await call(p.app, 'GET', '/sim/devices/15550000009/stats'), 404, /^unknown_device$/);
    refused(await call(p.app, 'POST', '/sim/devices/15550000009/read', { message_id: 'x' }), 404, /^unknown_device$/);
    const missing = await call(p.app, 'GET', '/v2/keys/15551234567');
    refused(missing, 404, /^no route GET \/v2\/keys\/15551234567$/);
    refused(await call(p.app, 'GET', '/v1/keys/bad%20address'), 400, /address/);
    const waId = await registerDevice(p.app, '+15551230002');
    refused(await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: '15550600600' }), 400, /^text: required/);
    refused(await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { text: 'hi' }), 400, /^to: /);
  });
});
