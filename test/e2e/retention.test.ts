import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { openWindows, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';
import { readTraceLines } from '../../src/trace/store.ts';

describe('retention: messages, and then the user, are deleted', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETENTION: '3s', SEALPOST_SWEEP_EVERY_MS: '500' } });
  });
  afterAll(async () => sys?.close());

  const delivered = (wamid: string) => waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivery');
  const exists = async (key: string) => (await sys.ctx.redis.exists(key)) === 1;

  it('deletes expired messages, a user whose last message expired (number included), keeps a newer message; also when the deletion job was lost', async () => {
    const [gone, stays, lostJob] = await Promise.all(['+15558100001', '+15558100002', '+15558100003'].map((p) => createDevice(sys.platformUrl, p)));
    await openWindows(sys, [gone!, stays!, lostJob!]);
    const old = await sendText(sys, gone!, 'expires with its user');
    const older = await sendText(sys, stays!, 'expires, the user stays');
    const lost = await sendText(sys, lostJob!, 'its deletion job is lost');
    await Promise.all([old, older, lost].map(delivered));
    const convGone = conversationOfWamid(old)!;
    const convStays = conversationOfWamid(older)!;
    const convLost = conversationOfWamid(lost)!;
    expect(await exists(sys.ctx.keys.meta(convGone))).toBe(true);
    // A worker crash loses the deletion jobs of one conversation: only the sweeper can find it now.
    for (const job of await sys.ctx.queues.timers.getDelayed()) {
      if (job.data.conversationId === convLost && job.data.event.type === 'PURGE_DUE') await job.remove();
    }
    // 2 s later the second user writes again and gets a newer message, which outlives the first ones.
    await new Promise((r) => setTimeout(r, 2000));
    await userWrites(sys, stays!, 'still here');
    const newer = await sendText(sys, stays!, 'kept');
    await delivered(newer);
    await waitFor(async () => !(await exists(sys.ctx.keys.meta(convGone))) && !(await exists(sys.ctx.keys.meta(convLost))), 'the expired conversations to be deleted', 30_000, 200);
    await waitFor(async () => !(await exists(sys.ctx.keys.message(convStays, older))), 'the older message of the remaining user to be deleted', 30_000, 200);

    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const id of [old, older, lost]) expect(keysContaining(dump, id), `keys naming ${id}`).toEqual([]);
    for (const c of [convGone, convLost]) expect(keysContaining(dump, c).map((k) => `${k} = ${dump.get(k)!.slice(0, 300)}`), `keys of conversation ${c}`).toEqual([]);
    for (const w of [gone!, lostJob!]) expect(keysContaining(dump, w), `keys holding ${w}`).toEqual([]);
    // The user with a newer message keeps exactly that one (and their inbound message from the same time).
    const rows = [...dump.keys()].filter((k) => k.startsWith(`${sys.prefix}:{c:${convStays}}:m:`)).map((k) => k.split(':m:')[1]);
    expect(rows).toContain(newer);
    expect(rows).not.toContain(older);
    expect(rows).toHaveLength(2);
    expect(await exists(sys.ctx.keys.meta(convStays))).toBe(true);
    // Its trace no longer names the expired message, and still replays.
    const trace = (await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(convStays), convStays));
    expect(trace.join('\n')).not.toContain(older);
    const { replayTrace, parseTrace } = await import('../../src/trace/replay.ts');
    expect(replayTrace(parseTrace(trace.join('\n')))).toMatchObject({ ok: true });
  }, 60_000);
});
