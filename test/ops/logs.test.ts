import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { capturedLogs, captureLogs, openWindows, sendTemplate, sendText, startSystem, type TestSystem } from '../helpers/system.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';

/** Log lines as objects (pino writes one JSON object per line). */
const lines = () => capturedLogs.flatMap((chunk) => chunk.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>));

/**
 * Operators follow a message through the logs by its wamid and conversation id: the API's access line of
 * the send, each status, and a failure carry both; none carries the content or a full phone number.
 */
describe('structured logs carry the conversation id and the wamid, never content', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    captureLogs();
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('follows a delivered message and a failed one by wamid and conversation id', async () => {
    const phone = '+15557100001';
    const wa = await createDevice(sys.platformUrl, phone);
    await openWindows(sys, [wa]);
    const canary = `LOGCANARY-${randomUUID()}`;
    const wamid = await sendText(sys, wa, canary);
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered');
    // Nobody has this number: the message fails with 131026.
    const lost = await sendTemplate(sys, '15557100999', 'hello_world');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === lost && s.status === 'failed'), 'failed');
    await waitFor(() => lines().some((l) => l.wamid === lost && l.msg === 'message failed'), 'the failure logged');

    const conv = conversationOfWamid(wamid)!;
    const all = lines();
    const access = all.find((l) => l.msg === 'request' && l.wamid === wamid);
    expect(access, 'the access line of the send').toMatchObject({ conversation_id: conv, status: 200 });
    expect(all.some((l) => l.msg === 'message status' && l.wamid === wamid && l.conversation_id === conv && l.status === 'delivered')).toBe(true);
    expect(all.find((l) => l.msg === 'message failed' && l.wamid === lost)).toMatchObject({ conversation_id: conversationOfWamid(lost), code: 131026 });

    const text = capturedLogs.join('');
    expect(text).not.toContain(canary);
    expect(text).not.toContain(phone.slice(1));
    expect(text).not.toContain('15557100999');
  }, 60_000);
});
