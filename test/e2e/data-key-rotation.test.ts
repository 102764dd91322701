import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationId } from '../../src/runtime/ids.ts';
import { DataKeys, openBinary, sealedVersion } from '../../src/store/sealer.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { openWindows, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

describe('messaging across a data key rotation', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('delivers what was accepted before and after the rotation both ways; the conversation is re-sealed under the new version', async () => {
    const b = sys.business.business_id;
    const waId = await createDevice(sys.platformUrl, '+15554880001');
    await openWindows(sys, [waId]);
    const conv = await conversationId(sys.ctx.dataKeys, b, sys.business.phone_number_id, waId);
    const sessionKey = sys.ctx.keys.session(conv);
    await waitFor(async () => (await sys.ctx.redis.exists(sessionKey)) === 1, 'the session stored');
    expect(sealedVersion((await sys.ctx.redis.getBuffer(sessionKey))!)).toBe(1);

    // Accepted (its row sealed) under version 1; most likely sent after the rotation, by a drain under version 2.
    const before = await sendText(sys, waId, 'before the rotation');
    // One process here (API and workers), so the new version may start at once.
    expect(await sys.ctx.dataKeys.rotate(b, 0)).toMatchObject({ version: 2 });
    const after = await sendText(sys, waId, 'after the rotation');
    await waitFor(() => [before, after].every((id) => sys.receiver.statuses().some((s) => s.id === id && s.status === 'delivered')), 'both delivered');
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => m.text?.body)).toEqual(['before the rotation', 'after the rotation']);
    await userWrites(sys, waId, 'reply after the rotation');

    // The conversation's session is now sealed under version 2, and any process (a fresh one here) opens it.
    const sealed = (await sys.ctx.redis.getBuffer(sessionKey))!;
    expect(sealedVersion(sealed)).toBe(2);
    const other = new DataKeys(sys.ctx.redis, sys.ctx.keys, sys.masterKey);
    expect(openBinary(await other.get(b), sealed, `${sessionKey}:s`).length).toBeGreaterThan(0);
    // Conversation ids are keyed hashes under version 1: the same conversation before and after.
    expect(await conversationId(other, b, sys.business.phone_number_id, waId)).toBe(conv);
  });
});
