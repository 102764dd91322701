import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { capturedLogs, captureLogs, startSystem, type TestSystem } from '../helpers/system.ts';
import { GROUP_ID } from '../../src/store/groups.ts';

type Json = Record<string, any>;

/**
 * Group management end to end (docs/groups.md): the Groups API on the router, the transport's registry and
 * its join/leave events from simulated users, and the signed webhooks the business gets.
 */
describe('groups: management through the API, joins and leaves from the transport', () => {
  let sys: TestSystem;
  let other: Awaited<ReturnType<TestSystem['ctx']['businesses']['create']>>;
  const SUBJECT = 'Subject-Canary-Bakery-Regulars';
  const DESCRIPTION = 'Description-Canary about bread';

  beforeAll(async () => {
    captureLogs();
    sys = await startSystem();
    other = await sys.ctx.businesses.create({ name: 'Other', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
  }, 60_000);
  afterAll(async () => sys?.close());

  const api = async (method: string, path: string, body?: unknown, token = sys.business.access_token): Promise<{ status: number; json: Json; text: string }> => {
    const res = await fetch(`${sys.apiUrl}${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null, text };
  };
  const pn = () => sys.business.phone_number_id;
  /** Every `groups[]` entry of the webhooks received with this field, in arrival order. */
  const hooks = (field: string): Json[] => sys.receiver.received.flatMap((w) => (w.body.entry ?? []).flatMap((e: Json) => e.changes.filter((c: Json) => c.field === field).flatMap((c: Json) => c.value.groups ?? [])));
  const hook = async (field: string, match: (g: Json) => boolean, what: string): Promise<Json> => {
    await waitFor(() => hooks(field).some(match), what, 20_000);
    return hooks(field).find(match)!;
  };
  const transportGroup = async (id: string) => {
    const res = await fetch(`${sys.platformUrl}/v1/groups/${id}`);
    return { status: res.status, json: (await res.json()) as Json };
  };
  const join = async (waId: string, link: string) => {
    const res = await fetch(`${sys.platformUrl}/sim/devices/${waId}/groups/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invite_link: link }) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  const leave = async (waId: string, groupId: string) => {
    const res = await fetch(`${sys.platformUrl}/sim/devices/${waId}/groups/${groupId}/leave`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    return res.status;
  };
  const create = async (subject = SUBJECT, extra: Json = {}): Promise<{ group_id: string; invite_link: string; request_id: string }> => {
    const res = await api('POST', `/v23.0/${pn()}/groups`, { messaging_product: 'whatsapp', subject, ...extra });
    expect(res.status, res.text).toBe(200);
    expect(Object.keys(res.json).sort()).toEqual(['messaging_product', 'request_id']);
    const created = await hook('group_lifecycle_update', (g) => g.request_id === res.json.request_id, 'the group_create webhook');
    return { group_id: created.group_id, invite_link: created.invite_link, request_id: res.json.request_id };
  };
  let phoneSeq = 0;
  const user = () => createDevice(sys.platformUrl, `+1555610${String(phoneSeq++).padStart(4, '0')}`);

  it('creates a group: request_id, then a signed group_lifecycle_update with the group id and invite link; registered with the transport', async () => {
    const res = await api('POST', `/v23.0/${pn()}/groups`, { messaging_product: 'whatsapp', subject: SUBJECT, description: DESCRIPTION });
    expect(res.status, res.text).toBe(200);
    const created = await hook('group_lifecycle_update', (g) => g.request_id === res.json.request_id, 'the group_create webhook');
    expect(created).toMatchObject({ type: 'group_create', subject: SUBJECT, description: DESCRIPTION, join_approval_mode: 'auto_approve' });
    expect(created.group_id).toMatch(GROUP_ID);
    expect(created.invite_link).toMatch(/^https:\/\/chat\.whatsapp\.com\/[A-Za-z0-9_-]{22}$/);
    // The envelope is the Cloud API's: the WABA, the number's metadata, signed (the receiver checks the signature).
    const delivery = sys.receiver.received.find((w) => JSON.stringify(w.body).includes(created.group_id))!;
    expect(delivery.signature).toMatch(/^sha256=/);
    expect(delivery.body.entry[0].changes[0].value.metadata).toEqual({ display_phone_number: sys.business.display_phone_number, phone_number_id: pn() });
    const t = await transportGroup(created.group_id);
    expect(t.json).toEqual({ group_id: created.group_id, owner: sys.business.display_phone_number, invite_code: created.invite_link.split('/').pop(), join_approval: 'auto_approve', members: [] });
    const info = await api('GET', `/v23.0/${created.group_id}?fields=subject,description,join_approval_mode,participants,total_participant_count,creation_timestamp,suspended`);
    expect(info.json).toMatchObject({ id: created.group_id, subject: SUBJECT, description: DESCRIPTION, join_approval_mode: 'auto_approve', participants: [], total_participant_count: 0, suspended: false });
    expect(info.json.creation_timestamp).toMatch(/^\d+$/);
    // Only the fields asked for.
    expect((await api('GET', `/v23.0/${created.group_id}?fields=subject`)).json).toEqual({ id: created.group_id, subject: SUBJECT });
    expect((await api('GET', `/v23.0/${created.group_id}?fields=bogus`)).json.error.code).toBe(100);
  });

  it('a user joins by the link: participant, transport member, group_participants_update; leaves: removed again', async () => {
    const g = await create();
    const wa = await user();
    expect((await join(wa, g.invite_link)).json).toEqual({ group_id: g.group_id });
    const added = await hook('group_participants_update', (h) => h.group_id === g.group_id && h.type === 'group_participants_add', 'the join webhook');
    expect(added).toMatchObject({ reason: 'invite_link_joined', added_participants: [{ wa_id: wa }] });
    await waitFor(async () => (await transportGroup(g.group_id)).json.members.includes(wa), 'the transport to list the member');
    expect((await api('GET', `/v23.0/${g.group_id}?fields=participants,total_participant_count`)).json).toEqual({ id: g.group_id, participants: [{ wa_id: wa }], total_participant_count: 1 });
    // A second join of a member changes nothing and tells nothing.
    await join(wa, g.invite_link);

    expect(await leave(wa, g.group_id)).toBe(200);
    const left = await hook('group_participants_update', (h) => h.group_id === g.group_id && h.type === 'group_participants_remove', 'the leave webhook');
    expect(left).toMatchObject({ initiated_by: 'participant', removed_participants: [{ wa_id: wa }] });
    await waitFor(async () => (await transportGroup(g.group_id)).json.members.length === 0, 'the transport to drop the member');
    expect((await api('GET', `/v23.0/${g.group_id}?fields=participants`)).json.participants).toEqual([]);
    expect(hooks('group_participants_update').filter((h) => h.group_id === g.group_id && h.type === 'group_participants_add')).toHaveLength(1);
  });

  it('at most 8 participants: the ninth join is refused with 131204 in the webhook; removal by the business, 131212 for a non-participant', async () => {
    const g = await create();
    const users = await Promise.all(Array.from({ length: 9 }, () => user()));
    for (const wa of users.slice(0, 8)) {
      await join(wa, g.invite_link);
      await hook('group_participants_update', (h) => h.group_id === g.group_id && h.added_participants?.[0]?.wa_id === wa, `${wa} to join`);
    }
    await join(users[8]!, g.invite_link);
    const refused = await hook('group_participants_update', (h) => h.group_id === g.group_id && h.errors, 'the ninth join to be refused');
    expect(refused).toMatchObject({ type: 'group_participants_add', failed_participants: [{ wa_id: users[8] }], errors: [{ code: 131204 }] });
    expect((await api('GET', `/v23.0/${g.group_id}?fields=total_participant_count`)).json.total_participant_count).toBe(8);
    expect((await transportGroup(g.group_id)).json.members).toHaveLength(8);

    // Removal: 131212 when anyone named is not a participant (nothing removed), then a real removal.
    const bad = await api('DELETE', `/v23.0/${g.group_id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: users[0] }, { user: users[8] }] });
    expect([bad.status, bad.json.error.code]).toEqual([400, 131212]);
    expect((await api('GET', `/v23.0/${g.group_id}?fields=total_participant_count`)).json.total_participant_count).toBe(8);
    const tooMany = await api('DELETE', `/v23.0/${g.group_id}/participants`, { messaging_product: 'whatsapp', participants: users.map((u) => ({ user: u })) });
    expect(tooMany.json.error.code).toBe(100);
    const ok = await api('DELETE', `/v23.0/${g.group_id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: users[0] }, { user: users[1] }] });
    expect(ok.json).toEqual({ success: true });
    const removed = await hook('group_participants_update', (h) => h.group_id === g.group_id && h.type === 'group_participants_remove', 'the removal webhook');
    expect(removed).toMatchObject({ initiated_by: 'business', removed_participants: [{ wa_id: users[0] }, { wa_id: users[1] }] });
    expect((await transportGroup(g.group_id)).json.members).toEqual(users.slice(2, 8));
    // Room again: the ninth user now joins.
    await join(users[8]!, g.invite_link);
    await hook('group_participants_update', (h) => h.group_id === g.group_id && h.added_participants?.[0]?.wa_id === users[8], 'the ninth user to join');
  }, 120_000);

  it('approval_required: a join is a request, listed, approved or rejected; a pending requester is no member, so the transport refuses their leave and the request stays', async () => {
    const g = await create('Needs approval', { join_approval_mode: 'approval_required' });
    expect((await transportGroup(g.group_id)).json.join_approval).toBe('approval_required');
    const [a, b, c] = await Promise.all([user(), user(), user()]);
    expect((await join(a!, g.invite_link)).json).toEqual({ group_id: g.group_id, pending: true });
    await join(b!, g.invite_link);
    await join(c!, g.invite_link);
    const created = await hook('group_participants_update', (h) => h.group_id === g.group_id && h.type === 'group_join_request_created' && h.wa_id === a, 'the join request webhook');
    await waitFor(async () => (await api('GET', `/v23.0/${g.group_id}/join_requests`)).json.data.length === 3, 'three join requests');
    const list = (await api('GET', `/v23.0/${g.group_id}/join_requests`)).json.data as Json[];
    const idOf = (wa: string) => list.find((r) => r.wa_id === wa)!.join_request_id;
    expect(idOf(a!)).toBe(created.join_request_id);
    expect((await api('GET', `/v23.0/${g.group_id}?fields=participants`)).json.participants).toEqual([]);

    const approved = await api('POST', `/v23.0/${g.group_id}/join_requests`, { messaging_product: 'whatsapp', join_requests: [idOf(a!), 'nope'] });
    expect(approved.json).toMatchObject({ messaging_product: 'whatsapp', approved_join_requests: [idOf(a!)], failed_join_requests: [{ join_request_id: 'nope' }] });
    await hook('group_participants_update', (h) => h.group_id === g.group_id && h.reason === 'join_request_approved', 'the approval webhook');
    expect((await transportGroup(g.group_id)).json.members).toEqual([a]);

    const rejected = await api('DELETE', `/v23.0/${g.group_id}/join_requests`, { messaging_product: 'whatsapp', join_requests: [idOf(b!)] });
    expect(rejected.json).toEqual({ messaging_product: 'whatsapp', rejected_join_requests: [idOf(b!)] });
    await hook('group_participants_update', (h) => h.group_id === g.group_id && h.type === 'group_join_request_rejected', 'the rejection webhook');

    // c is not a member: the transport refuses a leave (no group_leave event), and c's request stays pending.
    expect(await leave(c!, g.group_id)).toBe(403);
    expect((await api('GET', `/v23.0/${g.group_id}/join_requests`)).json.data.map((r: Json) => r.wa_id)).toEqual([c]);
    expect((await api('GET', `/v23.0/${g.group_id}?fields=participants`)).json.participants).toEqual([{ wa_id: a }]);
  }, 60_000);

  it('invite links: a new one revokes the old; DELETE revokes it', async () => {
    const g = await create();
    const fresh = await api('POST', `/v23.0/${g.group_id}/invite_link`);
    expect(fresh.json.messaging_product).toBe('whatsapp');
    expect(fresh.json.invite_link).toMatch(/^https:\/\/chat\.whatsapp\.com\//);
    expect(fresh.json.invite_link).not.toBe(g.invite_link);
    const wa = await user();
    expect((await join(wa, g.invite_link)).status).toBe(404);
    expect((await join(wa, fresh.json.invite_link)).status).toBe(200);
    await hook('group_participants_update', (h) => h.group_id === g.group_id && h.added_participants?.[0]?.wa_id === wa, 'a join by the new link');
    expect((await api('DELETE', `/v23.0/${g.group_id}/invite_link`)).json).toEqual({ success: true });
    expect((await join(await user(), fresh.json.invite_link)).status).toBe(404);
  });

  it('concurrent changes: the transport ends with what the store holds (each change is PUT before its compare-and-set)', async () => {
    const g = await create();
    const users = await Promise.all(Array.from({ length: 4 }, () => user()));
    for (const wa of users) await join(wa, g.invite_link);
    await waitFor(async () => (await transportGroup(g.group_id)).json.members.length === 4, 'four members');
    const answers = await Promise.all([
      ...Array.from({ length: 5 }, () => api('POST', `/v23.0/${g.group_id}/invite_link`)),
      api('DELETE', `/v23.0/${g.group_id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: users[0] }] }),
      api('DELETE', `/v23.0/${g.group_id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: users[1] }] }),
      api('POST', `/v23.0/${g.group_id}`, { messaging_product: 'whatsapp', join_approval_mode: 'approval_required' }),
    ]);
    for (const a of answers) expect(a.status, a.text).toBe(200);
    const stored = (await sys.ctx.groups.store.get(sys.business.business_id, g.group_id))!;
    const t = (await transportGroup(g.group_id)).json;
    expect(t).toMatchObject({ invite_code: stored.invite_code, members: stored.participants, join_approval: 'approval_required' });
    expect(stored.participants).toEqual(users.slice(2));
    expect(answers.slice(0, 5).map((a) => a.json.invite_link.split('/').pop())).toContain(stored.invite_code);
  });

  it('settings update and delete, with their webhooks; the deleted group is gone everywhere', async () => {
    const g = await create();
    const upd = await api('POST', `/v23.0/${g.group_id}`, { messaging_product: 'whatsapp', subject: 'Renamed', join_approval_mode: 'approval_required' });
    expect(upd.json).toEqual({ success: true });
    const s = await hook('group_settings_update', (h) => h.group_id === g.group_id, 'the settings webhook');
    expect(s).toMatchObject({ type: 'group_settings_update', group_subject: { text: 'Renamed', update_successful: true }, join_approval_mode: { mode: 'approval_required' } });
    expect((await api('GET', `/v23.0/${g.group_id}?fields=subject,join_approval_mode`)).json).toEqual({ id: g.group_id, subject: 'Renamed', join_approval_mode: 'approval_required' });
    expect((await transportGroup(g.group_id)).json.join_approval).toBe('approval_required');
    expect((await api('POST', `/v23.0/${g.group_id}`, { messaging_product: 'whatsapp', subject: 'x'.repeat(129) })).json.error.code).toBe(100);
    expect((await api('POST', `/v23.0/${g.group_id}`, { messaging_product: 'whatsapp' })).json.error.code).toBe(100);

    expect((await api('DELETE', `/v23.0/${g.group_id}`)).json).toEqual({ success: true });
    await hook('group_lifecycle_update', (h) => h.group_id === g.group_id && h.type === 'group_delete', 'the delete webhook');
    expect((await transportGroup(g.group_id)).status).toBe(404);
    const gone = await api('GET', `/v23.0/${g.group_id}`);
    expect([gone.status, gone.json.error.code]).toEqual([400, 100]);
    expect(await sys.ctx.redis.exists(sys.ctx.keys.group(sys.business.business_id, g.group_id), sys.ctx.keys.groupOwner(g.group_id))).toBe(0);
  });

  it('refuses bad requests: subject missing or too long, description too long, bad mode, bad limit, bad cursor (131059); 131211 past 10,000 groups', async () => {
    const post = (body: Json) => api('POST', `/v23.0/${pn()}/groups`, { messaging_product: 'whatsapp', ...body });
    for (const body of [{}, { subject: '' }, { subject: 'x'.repeat(129) }, { subject: 'ok', description: 'x'.repeat(2049) }, { subject: 'ok', join_approval_mode: 'sometimes' }]) {
      const r = await post(body);
      expect([r.status, r.json.error.code], JSON.stringify(body)).toEqual([400, 100]);
    }
    expect((await post({ subject: 'x'.repeat(128), description: 'y'.repeat(2048) })).status).toBe(200);
    for (const q of ['limit=0', 'limit=1025', 'limit=x']) expect((await api('GET', `/v23.0/${pn()}/groups?${q}`)).json.error.code, q).toBe(100);
    for (const c of ['garbage', Buffer.from('1.Gnot-a-group').toString('base64url'), '']) {
      const r = await api('GET', `/v23.0/${pn()}/groups?after=${c}`);
      expect([r.status, r.json.error?.code], c).toEqual([400, 131059]);
    }
    // At the limit (filled in the index directly: 10,000 real groups are slow to make).
    const other2 = await sys.ctx.businesses.create({ name: 'Full', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
    const key = sys.ctx.keys.numberGroups(other2.business_id, other2.phone_number_id);
    const args: (string | number)[] = [];
    for (let i = 0; i < 10_000; i++) args.push(i, `Gfake${String(i).padStart(20, '0')}`);
    await sys.ctx.redis.zadd(key, ...args);
    const full = await api('POST', `/v23.0/${other2.phone_number_id}/groups`, { messaging_product: 'whatsapp', subject: 'one too many' }, other2.access_token);
    expect([full.status, full.json.error.code]).toEqual([400, 131211]);
    expect(full.json.error.error_data.messaging_product).toBe('whatsapp');
  });

  it('lists groups in pages with cursors, forwards and back', async () => {
    const biz = await sys.ctx.businesses.create({ name: 'Lister', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await api('POST', `/v23.0/${biz.phone_number_id}/groups`, { messaging_product: 'whatsapp', subject: `g${i}` }, biz.access_token);
      made.push((await hook('group_lifecycle_update', (h) => h.request_id === r.json.request_id, 'create')).group_id);
    }
    const page = (q: string) => api('GET', `/v23.0/${biz.phone_number_id}/groups?${q}`, undefined, biz.access_token);
    const p1 = (await page('limit=2')).json;
    expect(p1.data.map((g: Json) => g.subject)).toEqual(['g0', 'g1']);
    expect(p1.paging.next).toBe(true);
    const p2 = (await page(`limit=2&after=${p1.paging.cursors.after}`)).json;
    expect(p2.data.map((g: Json) => g.id)).toEqual([made[2]]);
    expect(p2.paging.next).toBeUndefined();
    const back = (await page(`limit=1&before=${p2.paging.cursors.before}`)).json;
    expect(back.data.map((g: Json) => g.id)).toEqual([made[1]]);
    // Another business's number lists nothing of these (and its own token cannot list them).
    expect((await api('GET', `/v23.0/${biz.phone_number_id}/groups`, undefined, other.access_token)).json.error.code).toBe(100);
  });

  it("isolation: another business's token gets exactly the unknown-group answer on every group route; ids never clash with numbers or media", async () => {
    const g = await create();
    const unknown = `G${'A'.repeat(24)}`;
    const routes = (id: string) => [
      ['GET', `/v23.0/${id}?fields=subject`], ['GET', `/${id}`], ['POST', `/v23.0/${id}`, { messaging_product: 'whatsapp', subject: 'pwned' }], ['DELETE', `/v23.0/${id}`],
      ['POST', `/v23.0/${id}/invite_link`], ['DELETE', `/v23.0/${id}/invite_link`], ['GET', `/v23.0/${id}/join_requests`],
      ['POST', `/v23.0/${id}/join_requests`, { messaging_product: 'whatsapp', join_requests: ['x'] }], ['DELETE', `/v23.0/${id}/join_requests`, { messaging_product: 'whatsapp', join_requests: ['x'] }],
      ['DELETE', `/v23.0/${id}/participants`, { messaging_product: 'whatsapp', participants: [{ user: '15550000000' }] }], ['POST', `/${id}/invite_link`],
    ] as [string, string, Json?][];
    const strip = (j: Json) => ({ ...j.error, fbtrace_id: undefined, message: String(j.error.message).replace(/'[^']*'/, "'ID'") });
    for (const [i, [method, path, body]] of routes(g.group_id).entries()) {
      const theirs = await api(method, path, body, other.access_token);
      const [, unknownPath, unknownBody] = routes(unknown)[i]!;
      const none = await api(method, unknownPath, unknownBody);
      expect([theirs.status, theirs.json.error.code], `${method} ${path}`).toEqual([400, 100]);
      expect(strip(theirs.json), `${method} ${path}`).toEqual(strip(none.json));
      expect(theirs.text).not.toContain(SUBJECT);
    }
    // Nothing changed for the owner.
    expect((await api('GET', `/v23.0/${g.group_id}?fields=subject`)).json.subject).toBe(SUBJECT);
    expect((await transportGroup(g.group_id)).json.invite_code).toBe(g.invite_link.split('/').pop());
    // The number's own id on a group route is no group; a group id on a number route is no number.
    expect((await api('POST', `/v23.0/${pn()}/invite_link`)).json.error.code).toBe(100);
    expect((await api('POST', `/v23.0/${g.group_id}/groups`, { messaging_product: 'whatsapp', subject: 'x' })).json.error.code).toBe(100);
    expect((await api('GET', `/v23.0/${pn()}`)).json.display_phone_number).toBe(sys.business.display_phone_number);
  });

  it('keeps subjects, descriptions, participants and invite codes sealed in Redis, and out of the logs', async () => {
    const g = await create();
    const wa = await createDevice(sys.platformUrl, '+15556199999');
    await join(wa, g.invite_link);
    await hook('group_participants_update', (h) => h.group_id === g.group_id && h.added_participants?.[0]?.wa_id === wa, 'the join');
    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const secret of [SUBJECT, DESCRIPTION, wa, g.invite_link.split('/').pop()!]) expect(keysContaining(dump, secret), secret).toEqual([]);
    const logs = capturedLogs.join('');
    for (const secret of [SUBJECT, DESCRIPTION, '15556199999']) expect(logs.includes(secret), secret).toBe(false);
  });
});
