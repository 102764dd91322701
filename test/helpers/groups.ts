import type { TestSystem } from './system.ts';
import { waitFor } from './devices.ts';

type Json = Record<string, any>;

/** The Groups API and the simulated users' group routes, for tests (docs/groups.md). */
export function groupHelpers(sys: () => TestSystem) {
  const api = async (method: string, path: string, body?: unknown, token = sys().business.access_token): Promise<{ status: number; json: Json; text: string }> => {
    const res = await fetch(`${sys().apiUrl}${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null, text };
  };
  const sim = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Json }> => {
    const res = await fetch(`${sys().platformUrl}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    return { status: res.status, json: (await res.json()) as Json };
  };
  /** Every `groups[]` entry of the webhooks received with this field. */
  const hooks = (field: string): Json[] => sys().receiver.received.flatMap((w) => (w.body.entry ?? []).flatMap((e: Json) => e.changes.filter((c: Json) => c.field === field).flatMap((c: Json) => c.value.groups ?? [])));
  /** Every status object received for this wamid, in arrival order. */
  const statuses = (wamid: string): Json[] => sys().receiver.received.flatMap((w) => (w.body.entry ?? []).flatMap((e: Json) => e.changes.flatMap((c: Json) => (c.value.statuses ?? []).filter((s: Json) => s.id === wamid))));
  /** Every inbound message webhook entry with this group id. */
  const groupMessages = (groupId: string): Json[] => sys().receiver.received.flatMap((w) => (w.body.entry ?? []).flatMap((e: Json) => e.changes.flatMap((c: Json) => (c.value.messages ?? []).filter((m: Json) => m.group_id === groupId))));
  return {
    api, sim, hooks, statuses, groupMessages,
    async create(subject = 'A group', extra: Json = {}): Promise<{ group_id: string; invite_link: string }> {
      const res = await api('POST', `/v23.0/${sys().business.phone_number_id}/groups`, { messaging_product: 'whatsapp', subject, ...extra });
      if (res.status !== 200) throw new Error(res.text);
      await waitFor(() => hooks('group_lifecycle_update').some((g) => g.request_id === res.json.request_id), 'the group_create webhook', 20_000);
      const g = hooks('group_lifecycle_update').find((x) => x.request_id === res.json.request_id)!;
      return { group_id: g.group_id, invite_link: g.invite_link };
    },
    /** The user joins by the link; resolves once the transport lists them. */
    async join(waId: string, group: { group_id: string; invite_link: string }): Promise<void> {
      const r = await sim('POST', `/sim/devices/${waId}/groups/join`, { invite_link: group.invite_link });
      if (r.status !== 200) throw new Error(JSON.stringify(r.json));
      await waitFor(async () => ((await sim('GET', `/v1/groups/${group.group_id}`)).json.members as string[]).includes(waId), 'the transport to list the member', 20_000);
    },
    /** Sends a text to the group; returns the wamid. */
    async sendToGroup(groupId: string, body: string, extra: Json = {}): Promise<string> {
      const r = await api('POST', `/v23.0/${sys().business.phone_number_id}/messages`, { messaging_product: 'whatsapp', recipient_type: 'group', to: groupId, type: 'text', text: { body }, ...extra });
      if (r.status !== 200) throw new Error(r.text);
      return r.json.messages[0].id as string;
    },
    /** The group messages a device shows (texts), in arrival order. */
    async shown(waId: string, groupId: string, device = 1): Promise<{ id: string; from: string; body: string; arrivals: number }[]> {
      const r = await sim('GET', `/sim/devices/${waId}/messages?device=${device}`);
      return (r.json.messages as Json[]).filter((m) => m.group_id === groupId).map((m) => ({ id: m.id, from: m.from, body: m.text?.body, arrivals: m.arrivals }));
    },
  };
}
