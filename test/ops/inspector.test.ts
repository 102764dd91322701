import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationMachine } from '../../machines/conversation.ts';
import { chartOf, renderChart, stateIds } from '../../src/ops/statechart.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { openWindows, sendTemplate, sendText, startSystem, type TestSystem } from '../helpers/system.ts';

describe('the statechart drawn from the machine definition', () => {
  it('has every state and every transition between states of the conversation machine, and marks the active one', () => {
    const chart = chartOf(conversationMachine);
    const ids = stateIds(chart);
    for (const key of Object.keys(conversationMachine.root.states)) expect(ids).toContain(`${conversationMachine.id}.${key}`);
    // Every event handled anywhere in the definition appears in the chart.
    const events = new Set<string>();
    const walk = (n: typeof conversationMachine.root) => {
      for (const e of n.transitions.keys()) events.add(e);
      Object.values(n.states).forEach((c) => walk(c as never));
    };
    walk(conversationMachine.root);
    expect(new Set(chart.transitions.map((t) => t.event))).toEqual(events);
    expect(chart.transitions).toContainEqual(expect.objectContaining({ source: 'conversation.negotiating', target: 'conversation.established', event: 'BUNDLE_FETCHED' }));

    const svg = renderChart(chart, ['conversation.established']);
    expect(svg).toMatch(/<g class="state active" data-state="conversation\.established" data-active="true">/);
    expect(svg.match(/data-active="true"/g)).toHaveLength(1);
    expect(svg).toContain('data-source="conversation.negotiating" data-target="conversation.established"');
  });
});

describe('the conversation inspector', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${sys.apiUrl}${path}`, { headers, redirect: 'manual' });
  const admin = () => ({ authorization: `Bearer ${sys.adminToken}` });

  it('needs the admin token: 401 for scripts, the login page for browsers', async () => {
    const res = await get('/admin/conversations/0123456789abcdef0123456789abcd');
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(190);
    const browser = await get('/admin/conversations/0123456789abcdef0123456789abcd', { accept: 'text/html' });
    expect(browser.status).toBe(303);
    expect(browser.headers.get('location')).toMatch(/^\/admin\/login\?next=/);
  });

  it('shows a real conversation: its state, messages and trace, found by id or by wamid, with no content', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557300001');
    await openWindows(sys, [wa]);
    const canary = `INSPECTCANARY-${randomUUID()}`;
    const wamid = await sendText(sys, wa, canary);
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered');
    const conv = conversationOfWamid(wamid)!;

    const res = await get(`/admin/conversations/${conv}`, admin());
    expect(res.status).toBe(200);
    const data = (await res.json()) as Record<string, any>;
    expect(data).toMatchObject({ conversation_id: conv, state: 'established', active_states: ['conversation.established'], business_id: sys.business.business_id });
    expect(data.messages).toContainEqual(expect.objectContaining({ wamid, direction: 'outbound', status: 'delivered' }));
    expect(data.messages.some((m: any) => m.direction === 'inbound')).toBe(true);
    const types = data.trace.map((s: any) => s.event.type);
    expect(types).toEqual(expect.arrayContaining(['MESSAGE_RECEIVED', 'SEND', 'ENCRYPTED', 'TRANSPORT_ACCEPTED', 'DELIVERED']));
    expect(data.trace.map((s: any) => s.seq)).toEqual(data.trace.map((_: unknown, i: number) => i + 1));
    // The user's devices: the phone, on the verified list, with a session (numbers and flags, no keys).
    expect(data.devices).toEqual([{ device_id: 1, listed: true, session: true }]);
    expect(data.device_list_counter).toBe(1);

    const byWamid = (await (await get(`/admin/conversations/${wamid}?format=json`, admin())).json()) as Record<string, unknown>;
    expect(byWamid.conversation_id).toBe(conv);

    const page = await get(`/admin/conversations/${wamid}`, { ...admin(), accept: 'text/html' });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; style-src 'sha256-/);
    const html = await page.text();
    expect(html).toMatch(/<g class="state active" data-state="conversation\.established"/);
    expect(html).toContain(`data-wamid="${wamid}"`);
    expect(html).toMatch(/<tr data-device="1"><td>1 \(phone\)<\/td><td>yes<\/td><td>yes<\/td><\/tr>/);
    for (const text of [JSON.stringify(data), html]) {
      expect(text).not.toContain(canary);
      expect(text).not.toContain('15557300001');
    }
  }, 60_000);

  it('shows a failed message with its code', async () => {
    const wamid = await sendTemplate(sys, '15557300999', 'hello_world');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'failed'), 'failed');
    const data = (await (await get(`/admin/conversations/${wamid}`, admin())).json()) as Record<string, any>;
    expect(data.messages).toContainEqual(expect.objectContaining({ wamid, status: 'failed', error_code: 131026 }));
  }, 60_000);

  it('answers 404 for an unknown conversation, as JSON and as a page', async () => {
    const res = await get('/admin/conversations/0123456789abcdef0123456789abcd', admin());
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(100);
    expect((await get('/admin/conversations/not-a-conversation', { ...admin(), accept: 'text/html' })).status).toBe(404);
  });
});
