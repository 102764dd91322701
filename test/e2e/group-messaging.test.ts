import { randomUUID } from 'node:crypto';
import { SenderKeyMessage } from '@signalapp/libsignal-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initialTransition, transition } from 'xstate';
import { groupMachine, type GroupCommand } from '../../machines/group.ts';
import type { GroupTraceLine } from '../../src/trace/format.ts';
import { parseTrace, replayTrace } from '../../src/trace/replay.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { groupHelpers } from '../helpers/groups.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { capturedLogs, captureLogs, startSystem, type TestSystem } from '../helpers/system.ts';

/**
 * Sending to groups end to end (docs/groups.md, "Sending"): the business's sender key reaches every device of
 * every member over their conversations, each message is encrypted once and relayed to every member device,
 * resent until acknowledged, reported with `recipient_type: "group"`; members' messages reach the business; a
 * member who goes reads nothing after (a new sender key). Real router, transport, libsignal.
 */
describe('groups: sending and receiving', () => {
  let sys: TestSystem;
  const relayed: { group: string; id: string; body: string }[] = [];
  const g = groupHelpers(() => sys);
  let seq = 0;
  const user = () => createDevice(sys.platformUrl, `+1555620${String(seq++).padStart(4, '0')}`);

  const traffic: string[] = [];

  beforeAll(async () => {
    captureLogs();
    sys = await startSystem({
      env: { SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '1000' },
      platformTap: (method, url, body) => {
        if (url.startsWith('/v1/')) traffic.push(`${method} ${url} ${JSON.stringify(body ?? null)}`);
        const m = /\/v1\/groups\/([^/]+)\/messages$/.exec(url);
        if (method === 'POST' && m) for (const x of ((body as { messages?: { id: string; body: string }[] }).messages ?? [])) relayed.push({ group: m[1]!, id: x.id, body: x.body });
      },
    });
  }, 60_000);
  afterAll(async () => sys?.close());

  it('a message to the group reaches every device of every member once; sent and delivered are reported once, as a group\'s', async () => {
    const group = await g.create();
    const [a, b] = [await user(), await user()];
    const laptop = (await g.sim('POST', `/sim/devices/${a}/linked`, {})).json.device_id as number;
    await g.join(a, group);
    await g.join(b, group);
    const wamid = await g.sendToGroup(group.group_id, 'hello group');
    for (const [wa, device] of [[a, 1], [a, laptop], [b, 1]] as const) {
      await waitFor(async () => (await g.shown(wa, group.group_id, device)).length === 1, `${wa}/${device} to show the message`, 30_000);
      expect((await g.shown(wa, group.group_id, device)).map((m) => [m.id, m.body, m.from])).toEqual([[wamid, 'hello group', sys.business.display_phone_number]]);
    }
    await waitFor(() => g.statuses(wamid).some((s) => s.status === 'delivered'), 'delivered', 20_000);
    const st = g.statuses(wamid);
    expect(st.map((s) => s.status)).toEqual(['sent', 'delivered']);
    for (const s of st) expect(s).toMatchObject({ recipient_id: group.group_id, recipient_type: 'group' });
    // Encrypted once: every relay of it carries the same bytes.
    expect(new Set(relayed.filter((r) => r.id === wamid).map((r) => r.body)).size).toBe(1);
  });

  it('a member links a laptop after the key went out: the transport names it, the key is sent again, the laptop shows what follows', async () => {
    const group = await g.create();
    const [a, b] = [await user(), await user()];
    await g.join(a, group);
    await g.join(b, group);
    const first = await g.sendToGroup(group.group_id, 'before the laptop');
    await waitFor(() => g.statuses(first).some((x) => x.status === 'delivered'), 'delivered', 20_000);
    const laptop = (await g.sim('POST', `/sim/devices/${a}/linked`, {})).json.device_id as number;
    const second = await g.sendToGroup(group.group_id, 'after the laptop');
    await waitFor(async () => (await g.shown(a, group.group_id, laptop)).some((m) => m.id === second), 'the laptop to show the next message', 30_000).catch(async (e) => {
      if (process.env.DEBUG_GROUPS) {
        console.log((await sys.ctx.redis.lrange(sys.ctx.keys.groupTrace(sys.business.business_id, group.group_id), 0, -1)).join('\n'));
        console.log(JSON.stringify((await g.sim('GET', `/sim/devices/${a}/stats?device=${laptop}`)).json));
        const { readTraceLines } = await import('../../src/trace/store.ts');
        const conv = (JSON.parse((await sys.ctx.redis.lrange(sys.ctx.keys.groupTrace(sys.business.business_id, group.group_id), 0, 0))[0]!) as { event: { members: string[] } }).event.members[0]!;
        console.log((await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv)).join('\n'));
      }
      throw e;
    });
    expect((await g.shown(a, group.group_id, laptop)).map((m) => m.body)).toEqual(['after the laptop']);
    // It got the copy of the key made at a's join (not one made after the message: that could not decrypt it).
    expect((await g.sim('GET', `/sim/devices/${a}/stats?device=${laptop}`)).json).toMatchObject({ key_reuse: 0, failures: {} });
    // The message settles once the laptop acknowledged it too (the actor owes nothing more).
    await waitFor(async () => ((await (await fetch(`${sys.apiUrl}/admin/groups/${group.group_id}`, { headers: { authorization: `Bearer ${sys.adminToken}` } })).json()) as { messages: unknown[] }).messages.length === 0, 'every message settled', 20_000);
  });

  it('a member writes: the business gets it with the group id and the member as sender; the other members see it', async () => {
    const group = await g.create();
    const [a, b] = [await user(), await user()];
    await g.join(a, group);
    await g.join(b, group);
    const res = await g.sim('POST', `/sim/devices/${a}/groups/${group.group_id}/messages`, { text: 'from a member' });
    expect(res.status).toBe(200);
    await waitFor(() => g.groupMessages(group.group_id).length > 0, 'the member\'s message at the business', 30_000);
    const [m] = g.groupMessages(group.group_id);
    expect(m).toMatchObject({ id: res.json.id, from: a, group_id: group.group_id, type: 'text', text: { body: 'from a member' } });
    await waitFor(async () => (await g.shown(b, group.group_id)).length === 1, 'b to see a\'s message', 20_000);
    expect((await g.shown(b, group.group_id))[0]).toMatchObject({ from: a, body: 'from a member' });
  });

  it('a removed member and one who left read nothing after: the sender key is replaced before the next message', async () => {
    const group = await g.create();
    const [a, b, c] = [await user(), await user(), await user()];
    for (const u of [a, b, c]) await g.join(u, group);
    const first = await g.sendToGroup(group.group_id, 'before');
    for (const u of [a, b, c]) await waitFor(async () => (await g.shown(u, group.group_id)).length === 1, 'everyone to show the first message', 30_000);
    const remove = await g.api('DELETE', `/v23.0/${group.group_id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: c }] });
    expect(remove.status).toBe(200);
    expect((await g.sim('POST', `/sim/devices/${b}/groups/${group.group_id}/leave`, {})).status).toBe(200);
    await waitFor(async () => ((await g.sim('GET', `/v1/groups/${group.group_id}`)).json.members as string[]).join() === a, 'the transport to list only a', 20_000);
    const second = await g.sendToGroup(group.group_id, 'after');
    await waitFor(async () => (await g.shown(a, group.group_id)).length === 2, 'a to show the second message', 30_000);
    await waitFor(() => g.statuses(second).some((s) => s.status === 'delivered'), 'delivered', 20_000);
    for (const u of [b, c]) expect((await g.shown(u, group.group_id)).map((m) => m.body)).toEqual(['before']);
    // A new distribution: what was sent after is under a key b's and c's devices never got.
    const dist = (id: string) => SenderKeyMessage.deserialize(new Uint8Array(Buffer.from(relayed.find((r) => r.id === id)!.body, 'base64'))).distributionId();
    expect(dist(second)).not.toBe(dist(first));
    // A transport that registers the removed member again and hands them the later ciphertext: their device
    // holds it (it has no key for that distribution) and never shows it.
    const registered = (await g.sim('GET', `/v1/groups/${group.group_id}`)).json;
    expect((await g.sim('PUT', `/v1/groups/${group.group_id}`, { ...registered, members: [a, c] })).status).toBe(200);
    const heldBefore = ((await g.sim('GET', `/sim/devices/${c}/stats`)).json as { held: number }).held;
    const body = relayed.find((r) => r.id === second)!.body;
    expect((await g.sim('POST', `/v1/groups/${group.group_id}/messages`, { id: second, from: sys.business.display_phone_number, type: 7, body })).status).toBe(202);
    await waitFor(async () => ((await g.sim('GET', `/sim/devices/${c}/stats`)).json as { held: number }).held > heldBefore, 'c\'s device to hold what it cannot decrypt', 10_000);
    expect((await g.shown(c, group.group_id)).map((m) => m.body)).toEqual(['before']);
  });

  it('a data request: the export lists the user\'s groups; erasing the user takes them out of every group (a new key) before anything else', async () => {
    const group = await g.create();
    const [a, b] = [await user(), await user()];
    await g.join(a, group);
    await g.join(b, group);
    const first = await g.sendToGroup(group.group_id, 'before the erasure');
    await waitFor(() => g.statuses(first).some((x) => x.status === 'delivered'), 'delivered', 20_000);
    const admin = (method: string, wa: string) => fetch(`${sys.apiUrl}/admin/businesses/${sys.business.business_id}/users/${wa}`, { method, headers: { authorization: `Bearer ${sys.adminToken}` } });
    const exported = (await (await admin('GET', b)).json()) as { groups: unknown[] };
    expect(exported.groups).toEqual([{ group_id: group.group_id, role: 'participant' }]);
    expect((await (await admin('DELETE', b)).json())).toEqual({ success: true, erased: true });
    expect((await g.sim('GET', `/v1/groups/${group.group_id}`)).json.members).toEqual([a]);
    await waitFor(() => g.hooks('group_participants_update').some((h) => h.group_id === group.group_id && h.type === 'group_participants_remove'), 'the removal webhook', 20_000);
    const second = await g.sendToGroup(group.group_id, 'after the erasure');
    await waitFor(async () => (await g.shown(a, group.group_id)).length === 2, 'a to show the second message', 30_000);
    expect((await g.shown(b, group.group_id)).map((m) => m.body)).toEqual(['before the erasure']);
    const dist = (id: string) => SenderKeyMessage.deserialize(new Uint8Array(Buffer.from(relayed.find((r) => r.id === id)!.body, 'base64'))).distributionId();
    expect(dist(second)).not.toBe(dist(first));
    expect((await admin('GET', b)).status).toBe(404);
  });

  it('deleting a business takes its groups off the transport; their actors delete themselves', async () => {
    const admin = (method: string, path: string, body?: unknown) => fetch(`${sys.apiUrl}${path}`, {
      method, headers: { authorization: `Bearer ${sys.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const gone = await sys.ctx.businesses.create({ name: 'Leaving', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'v' });
    await sys.ctx.publisher.ensure(gone.phone_number_id);
    const mk = await g.api('POST', `/v23.0/${gone.phone_number_id}/groups`, { messaging_product: 'whatsapp', subject: 'leaving' }, gone.access_token);
    await waitFor(() => g.hooks('group_lifecycle_update').some((x) => x.request_id === mk.json.request_id), 'the group_create webhook', 20_000);
    const group = g.hooks('group_lifecycle_update').find((x) => x.request_id === mk.json.request_id)!;
    const member = await user();
    await g.join(member, group as { group_id: string; invite_link: string });
    const sent = await g.api('POST', `/v23.0/${gone.phone_number_id}/messages`, { messaging_product: 'whatsapp', recipient_type: 'group', to: group.group_id, type: 'text', text: { body: 'bye' } }, gone.access_token);
    expect(sent.status).toBe(200);
    await waitFor(async () => (await g.shown(member, group.group_id)).length === 1, 'the member to show the message', 30_000);
    expect((await admin('DELETE', `/admin/businesses/${gone.business_id}`)).status).toBe(200);
    expect((await g.sim('GET', `/v1/groups/${group.group_id}`)).status).toBe(404);
    expect(await sys.ctx.redis.exists(sys.ctx.keys.group(gone.business_id, group.group_id))).toBe(0);
    await waitFor(async () => (await sys.ctx.redis.exists(sys.ctx.keys.groupActor(gone.business_id, group.group_id))) === 0, 'the group actor to delete itself', 20_000);
  });

  it('refuses what groups do not take: unknown group 131041, no participants 131020, interactive 131051, another business\'s group 131041', async () => {
    const empty = await g.create();
    const send = (body: Record<string, unknown>, token?: string) => g.api('POST', `/v23.0/${sys.business.phone_number_id}/messages`, { messaging_product: 'whatsapp', recipient_type: 'group', ...body }, token);
    expect((await send({ to: empty.group_id, type: 'text', text: { body: 'x' } })).json.error.code).toBe(131020);
    expect((await send({ to: 'G' + 'A'.repeat(24), type: 'text', text: { body: 'x' } })).json.error.code).toBe(131041);
    expect((await send({ to: 'not-a-group', type: 'text', text: { body: 'x' } })).json.error.code).toBe(100);
    expect((await send({ to: empty.group_id, type: 'interactive', interactive: { type: 'button', body: { text: 'x' }, action: { buttons: [{ type: 'reply', reply: { id: 'a', title: 'A' } }] } } })).json.error.code).toBe(131051);
    // Another business, through its own number, cannot send to this business's group (with a member in it).
    const member = await user();
    await g.join(member, empty);
    const other = await sys.ctx.businesses.create({ name: 'Other', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'v' });
    const theirs = await g.api('POST', `/v23.0/${other.phone_number_id}/messages`, { messaging_product: 'whatsapp', recipient_type: 'group', to: empty.group_id, type: 'text', text: { body: 'x' } }, other.access_token);
    expect(theirs.json.error.code).toBe(131041);
    // Nor with its token on this business's number.
    const onOurs = await send({ to: empty.group_id, type: 'text', text: { body: 'x' } }, other.access_token);
    expect([onOurs.status, onOurs.json.error.code]).toEqual([400, 100]);
    expect((await send({ to: empty.group_id, type: 'text', text: { body: 'mine' } })).status).toBe(200);
    // A burst to one group past the pair limit's 45: 131208 (HTTP 429), nothing stored for the refused ones.
    const codes: number[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await send({ to: empty.group_id, type: 'text', text: { body: `burst ${i}` } });
      codes.push(r.status === 200 ? 200 : r.json.error.code);
    }
    expect(codes.filter((c) => c === 131208).length).toBeGreaterThan(0);
    expect(codes.every((c) => c === 200 || c === 131208)).toBe(true);
  });

  it('through a lossy transport every member device shows each message once; canaries stay out of Redis, logs, the trace and the transport\'s traffic', async () => {
    const group = await g.create();
    const phones = ['+15556300001', '+15556300002', '+15556300003'];
    const users: string[] = [];
    for (const p of phones) users.push(await createDevice(sys.platformUrl, p));
    const laptop = (await g.sim('POST', `/sim/devices/${users[0]}/linked`, {})).json.device_id as number;
    for (const u of users) await g.join(u, group);
    await g.sim('POST', '/sim/faults', { drop: 0.3, duplicate: 0.3, reorder: true });
    const out = Array.from({ length: 5 }, () => `CANARY-${randomUUID()}`);
    const wamids: string[] = [];
    for (const t of out) wamids.push(await g.sendToGroup(group.group_id, t));
    const viewers: [string, number][] = [[users[0]!, 1], [users[0]!, laptop], [users[1]!, 1], [users[2]!, 1]];
    await waitFor(async () => {
      for (const [u, d] of viewers) if ((await g.shown(u, group.group_id, d)).length < out.length) return false;
      return true;
    }, 'every member device to show every message', 90_000, 200);
    await waitFor(() => wamids.every((w) => g.statuses(w).some((x) => x.status === 'delivered')), 'every message delivered', 30_000);
    await g.sim('POST', '/sim/faults', {});
    for (const [u, d] of viewers) {
      const shown = await g.shown(u, group.group_id, d);
      expect(shown.map((m) => m.body).sort(), `${u}/${d}`).toEqual([...out].sort());
      expect(new Set(shown.map((m) => m.id)).size).toBe(out.length);
    }
    for (const w of wamids) expect(g.statuses(w).map((x) => x.status)).not.toContain('failed');
    // A member writes a canary too.
    const inbound = `CANARY-${randomUUID()} from a member`;
    const wrote = await g.sim('POST', `/sim/devices/${users[1]}/groups/${group.group_id}/messages`, { text: inbound });
    expect(wrote.status).toBe(200);
    await waitFor(() => g.groupMessages(group.group_id).some((m) => m.text?.body === inbound), 'the member\'s canary at the business', 30_000);
    await waitFor(async () => (await sys.ctx.redis.llen(sys.ctx.keys.webhookOutbox(sys.business.business_id))) === 0, 'the webhook outbox to drain');

    const trace = await sys.ctx.redis.lrange(sys.ctx.keys.groupTrace(sys.business.business_id, group.group_id), 0, -1);
    expect(trace.join('\n')).toContain('RELAYED');
    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const t of [...out, inbound]) {
      expect(keysContaining(dump, t), `Redis holding ${t}`).toEqual([]);
      expect(keysContaining(dump, Buffer.from(t).toString('base64').slice(0, 24)), `Redis holding ${t} in base64`).toEqual([]);
      expect(capturedLogs.filter((l) => l.includes(t)), `logs holding ${t}`).toEqual([]);
      expect(traffic.filter((r) => r.includes(t)), `transport traffic holding ${t}`).toEqual([]);
      expect(trace.filter((l) => l.includes(t))).toEqual([]);
    }
    for (const p of phones) {
      const digits = p.replace(/\D/g, '');
      expect(keysContaining(dump, digits), `Redis holding ${p}`).toEqual([]);
      expect(capturedLogs.filter((l) => l.includes(digits)), `logs holding ${p}`).toEqual([]);
      expect(trace.filter((l) => l.includes(digits)), `the group's trace holding ${p}`).toEqual([]);
    }
    expect(traffic.some((r) => r.startsWith(`POST /v1/groups/${group.group_id}/messages`))).toBe(true);
  }, 150_000);

  it('a group\'s trace replays through the pure machine to the commands it recorded', async () => {
    const group = await g.create();
    const [a, b] = [await user(), await user()];
    await g.join(a, group);
    await g.join(b, group);
    const w = await g.sendToGroup(group.group_id, 'traced');
    await waitFor(() => g.statuses(w).some((x) => x.status === 'delivered'), 'delivered', 20_000);
    await g.sim('POST', `/sim/devices/${b}/groups/${group.group_id}/leave`, {});
    const w2 = await g.sendToGroup(group.group_id, 'after b left');
    await waitFor(() => g.statuses(w2).some((x) => x.status === 'delivered'), 'the second delivered', 20_000);
    const raw = await sys.ctx.redis.lrange(sys.ctx.keys.groupTrace(sys.business.business_id, group.group_id), 0, -1);
    const lines = raw.map((l) => JSON.parse(l) as GroupTraceLine);
    expect(lines[0]!).toMatchObject({ group_id: group.group_id, seq: 1, input: { groupId: group.group_id } });
    expect(lines.map((l) => l.seq)).toEqual(lines.map((_, i) => i + 1));
    let [snap] = initialTransition(groupMachine, lines[0]!.input!);
    for (const line of lines) {
      const [next, actions] = transition(groupMachine, snap, line.event);
      snap = next;
      const commands = actions.flatMap((x) => (x.type === 'emitCommands' ? (x.params as { list: GroupCommand[] }).list : []));
      expect(commands).toEqual(line.commands);
      expect(String(next.value)).toBe(line.state);
    }
    // The replay command's own code (sealpost replay) takes it too, and finds a changed command.
    expect(replayTrace(parseTrace(raw.join('\n')))).toMatchObject({ ok: true, steps: lines.length, conversations: 1 });
    const tampered = raw.map((l, i) => (i === lines.length - 1 ? JSON.stringify({ ...lines[i], commands: [...lines[i]!.commands, { type: 'group.delete' }] }) : l));
    expect(replayTrace(parseTrace(tampered.join('\n')))).toMatchObject({ ok: false, seq: lines.length });
    expect(lines.some((l) => l.commands.some((c) => c.type === 'key.rotate'))).toBe(true);
    // The operator's view of the actor: members by conversation id, the distribution id, no number, no content.
    const inspect = async (id: string, token = sys.adminToken) => fetch(`${sys.apiUrl}/admin/groups/${id}`, { headers: { authorization: `Bearer ${token}` } });
    const view = (await (await inspect(group.group_id)).json()) as Record<string, any>;
    expect(view).toMatchObject({ group_id: group.group_id, business_id: sys.business.business_id, state: 'active', members: [expect.stringMatching(/^[0-9a-f]{30}$/)], mailbox_events: 0 });
    expect(view.distribution_id).toBe(SenderKeyMessage.deserialize(new Uint8Array(Buffer.from(relayed.find((r) => r.id === w2)!.body, 'base64'))).distributionId());
    const text = JSON.stringify(view);
    for (const secret of [a, b, 'traced', 'after b left']) expect(text).not.toContain(secret);
    expect((await inspect(group.group_id, 'not-the-admin-token')).status).toBe(401);
    expect((await inspect('G' + 'Q'.repeat(24))).status).toBe(404);
  });
});
