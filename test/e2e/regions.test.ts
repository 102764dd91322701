import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { deletePrefix, testRedisUrl } from '../helpers/redis.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';

// The region's store: another database of the same server stands in for another region's Redis.
const regionUrl = `${testRedisUrl().replace(/\/\d+$/, '')}/7`;

describe('local storage: a business pinned to a region', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_REGIONS: `eu=${regionUrl}` } });
  });
  afterAll(async () => {
    await sys?.close();
    if (sys) await deletePrefix(regionUrl, sys.prefix);
  });

  it("keeps its conversations, messages and sessions only in its region's store; the shared one keeps routing only", async () => {
    const receiver = await startWebhookReceiver({ appSecret: 'eu-secret-1', verifyToken: 'v' });
    try {
      const eu = await sys.ctx.businesses.create({ name: 'EU GmbH', webhookUrl: receiver.url, appSecret: 'eu-secret-1', verifyToken: 'v', region: 'eu' });
      await sys.ctx.publisher.ensure(eu.phone_number_id);
      const waId = await createDevice(sys.platformUrl, '+4915112345678');
      const inbound = `CANARY-${randomUUID()}`;
      const r = await fetch(`${sys.platformUrl}/sim/devices/${waId}/messages`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: eu.display_phone_number, text: inbound }),
      });
      const inId = ((await r.json()) as { id: string }).id;
      await waitFor(() => receiver.messages().some((m) => m.id === inId), 'the inbound webhook');
      const outbound = `CANARY-${randomUUID()}`;
      const res = await fetch(`${sys.apiUrl}/v23.0/${eu.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${eu.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messaging_product: 'whatsapp', to: waId, type: 'text', text: { body: outbound } }),
      });
      const wamid = ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
      await waitFor(() => receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered');
      expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toEqual([outbound]);

      const conv = conversationOfWamid(wamid)!;
      const shared = await dumpPrefix(sys.redisUrl, sys.prefix);
      const region = await dumpPrefix(regionUrl, sys.prefix);
      // The region holds the conversation: state, session, messages, trace.
      for (const part of ['meta', 'snap', 'sess', 'trace', `m:${wamid}`, `m:${inId}`]) {
        expect(region.has(`${sys.prefix}:{c:${conv}}:${part}`), part).toBe(true);
      }
      // The shared store holds none of it: no conversation key, no message id, no content, no number.
      expect([...shared.keys()].filter((k) => k.includes(`{c:${conv}}`))).toEqual([]);
      for (const needle of [wamid, inId, inbound, outbound, waId]) expect(keysContaining(shared, needle), needle).toEqual([]);
      // Only routing: which region the (opaque) conversation lives in.
      expect(shared.get(`${sys.prefix}:convregion`)).toContain(`"${conv}":"eu"`);
      // And nothing of the unpinned business went to the region.
      expect([...region.keys()].every((k) => k.includes(`{c:${conv}}`) || k.includes(`{w:${eu.business_id}}`) || k.endsWith(':expiries') || k.includes(':wm:') || k.includes(':win:'))).toBe(true);
    } finally {
      await receiver.close();
    }
  });
});
