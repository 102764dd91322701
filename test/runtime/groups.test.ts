import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { BusinessStore } from '../../src/store/businesses.ts';
import { GroupStore } from '../../src/store/groups.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { GroupService } from '../../src/runtime/groups.ts';
import { TransportUnavailableError, type TransportGroup } from '../../src/runtime/transport-client.ts';
import type { ChangeValue } from '../../src/webhook/envelope.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** GroupService against real Redis and a transport that fails on demand: a failed PUT changes nothing. */
describe('group service: the transport is told before the store changes', () => {
  const redis = new Redis(testRedisUrl());
  const prefix = testPrefix('grp');
  const keys = new Keys(prefix);
  const dataKeys = new DataKeys(redis, keys, randomBytes(32));
  const businesses = new BusinessStore(redis, keys, dataKeys);
  const registry = new Map<string, TransportGroup>();
  let down = false;
  const transport = {
    async putGroup(id: string, g: TransportGroup) {
      if (down) throw new TransportUnavailableError('down');
      registry.set(id, structuredClone(g));
    },
    async deleteGroup(id: string) {
      if (down) throw new TransportUnavailableError('down');
      registry.delete(id);
    },
  };
  const hooks: ChangeValue[] = [];
  const service = new GroupService(new GroupStore(redis, async () => redis, keys, (b) => dataKeys.get(b)), businesses, transport, async (_b, _p, v) => void hooks.push(...v), pino({ level: 'silent' }));
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('a join whose PUT fails is not recorded (the event comes back and is applied then); a removal whose PUT fails is refused', async () => {
    const biz = await businesses.create({ name: 'G Co', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' });
    const pn = (await businesses.phoneNumber(biz.phone_number_id))!;
    await service.create(pn, { messaging_product: 'whatsapp', subject: 'S' });
    const created = hooks.map((h) => (h.other!.value.groups as Record<string, unknown>[])[0]!).find((g) => g.type === 'group_create')!;
    const groupId = created.group_id as string;
    const code = String(created.invite_link).split('/').pop()!;
    const ev = { event_id: 'e1', kind: 'group_join' as const, group_id: groupId, from: '15550001111', to: pn.display_phone_number, invite_code: code, pending: false, timestamp: '1' };

    down = true;
    await expect(service.onTransportEvent(ev)).rejects.toThrow(TransportUnavailableError);
    expect((await service.store.get(biz.business_id, groupId))!.participants).toEqual([]);
    down = false;
    await service.onTransportEvent(ev);
    expect((await service.store.get(biz.business_id, groupId))!.participants).toEqual(['15550001111']);
    expect(registry.get(groupId)!.members).toEqual(['15550001111']);
    // The same event again (at-least-once): nothing changes, nothing more is told.
    const told = hooks.length;
    await service.onTransportEvent(ev);
    expect(hooks.length).toBe(told);

    const g = (await service.store.get(biz.business_id, groupId))!;
    down = true;
    await expect(service.removeParticipants(g, { messaging_product: 'whatsapp', participants: [{ user: '15550001111' }] })).rejects.toThrow(TransportUnavailableError);
    expect((await service.store.get(biz.business_id, groupId))!.participants).toEqual(['15550001111']);
    // An event naming another owner, or an invite code revoked meanwhile, is dropped.
    down = false;
    await service.onTransportEvent({ ...ev, from: '15550002222', to: '15559999999' });
    await service.onTransportEvent({ ...ev, from: '15550002222', invite_code: 'revoked' });
    expect((await service.store.get(biz.business_id, groupId))!.participants).toEqual(['15550001111']);
  });
});
