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

  it('deletes expired messages and a user whose last message expired (number included), also when the deletion job was lost', async () => {
    const [gone, lostJob] = await Promise.all(['+15558100001', '+15558100003'].map((p) => createDevice(sys.platformUrl, p)));
    await openWindows(sys, [gone!, lostJob!]);
    const old = await sendText(sys, gone!, 'expires with its user');
    const lost = await sendText(sys, lostJob!, 'its deletion job is lost');
    await Promise.all([old, lost].map(delivered));
    const convGone = conversationOfWamid(old)!;
    const convLost = conversationOfWamid(lost)!;
    expect(await exists(sys.ctx.keys.meta(convGone))).toBe(true);
    // A worker crash loses the deletion jobs of one conversation: only the sweeper can find it now.
    for (const job of await sys.ctx.queues.timers.getDelayed()) {
      const data = job.data as { conversationId?: string; event?: { type: string } };
      if (data.conversationId === convLost && data.event?.type === 'PURGE_DUE') await job.remove();
    }
    await waitFor(async () => !(await exists(sys.ctx.keys.meta(convGone))) && !(await exists(sys.ctx.keys.meta(convLost))), 'the expired conversations to be deleted', 30_000, 200);
    // The deleting drain finishes after its commit (index entries, mailbox, then its lease): wait for its end,
    // not just the commit, before looking for what is left.
    await waitFor(async () => {
      const d = await dumpPrefix(sys.redisUrl, sys.prefix);
      return [convGone, convLost].every((c) => keysContaining(d, c).length === 0);
    }, 'the deleting drains to finish', 5_000, 100); // well inside the lease's own TTL (15 s): a leaked lease fails

    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const id of [old, lost]) expect(keysContaining(dump, id), `keys naming ${id}`).toEqual([]);
    for (const c of [convGone, convLost]) expect(keysContaining(dump, c).map((k) => `${k} = ${dump.get(k)!.slice(0, 300)}`), `keys of conversation ${c}`).toEqual([]);
    for (const w of [gone!, lostJob!]) expect(keysContaining(dump, w), `keys holding ${w}`).toEqual([]);
  }, 60_000);
});

/**
 * Messages of different ages in one conversation: the older goes when its retention ends, the user and the
 * newer message stay. The retention's end is the event its deletion job posts (PURGE_DUE at that time), given
 * here at the moment between the two messages' ends, so no test waits on the clock; the retention is an hour,
 * so no real timer interferes.
 */
describe('retention: one message goes, a newer one stays', () => {
  let sys: TestSystem;
  const RETENTION_MS = 3_600_000;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETENTION: '1h' } });
  });
  afterAll(async () => sys?.close());

  const delivered = (wamid: string) => waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivery');
  const exists = async (key: string) => (await sys.ctx.redis.exists(key)) === 1;

  it('deletes the message whose retention ended and its trace lines; keeps the newer one, the user and a replayable trace', async () => {
    const stays = await createDevice(sys.platformUrl, '+15558100002');
    await openWindows(sys, [stays]);
    const olderAt = Date.now();
    const older = await sendText(sys, stays, 'expires, the user stays');
    await delivered(older);
    await userWrites(sys, stays, 'still here');
    const newer = await sendText(sys, stays, 'kept');
    await delivered(newer);
    const conv = conversationOfWamid(older)!;
    // Everything accepted so far, up to the older message, is past its retention at this instant; the user's
    // second message and the newer one (accepted after the older was delivered) are not.
    const olderEnds = Number(await sys.ctx.redis.zscore(sys.ctx.keys.retention(conv), older));
    expect(olderEnds).toBeGreaterThanOrEqual(olderAt + RETENTION_MS);
    await sys.ctx.mailboxes.post(conv, [{ type: 'PURGE_DUE', at: olderEnds }], RETENTION_MS);
    await waitFor(async () => !(await exists(sys.ctx.keys.message(conv, older))), 'the older message to be deleted', 30_000);

    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    expect(keysContaining(dump, older), `keys naming ${older}`).toEqual([]);
    // The user with a newer message keeps exactly that one (and their inbound message from after the older one).
    const rows = [...dump.keys()].filter((k) => k.startsWith(`${sys.prefix}:{c:${conv}}:m:`)).map((k) => k.split(':m:')[1]);
    expect(rows).toContain(newer);
    expect(rows).not.toContain(older);
    expect(rows).toHaveLength(2);
    expect(await exists(sys.ctx.keys.meta(conv))).toBe(true);
    // Its trace no longer names the expired message, and still replays.
    const trace = await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv);
    expect(trace.join('\n')).not.toContain(older);
    const { replayTrace, parseTrace } = await import('../../src/trace/replay.ts');
    expect(replayTrace(parseTrace(trace.join('\n')))).toMatchObject({ ok: true });
  }, 60_000);
});
