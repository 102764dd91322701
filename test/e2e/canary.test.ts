import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { capturedLogs, captureLogs, openWindows, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

describe('privacy: no message plaintext at rest', () => {
  let sys: TestSystem;

  beforeAll(async () => {
    captureLogs();
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('after a run with canary bodies, no Redis key or value and no log line contains them', async () => {
    const canaries = Array.from({ length: 6 }, () => `CANARY-${randomUUID()}`);
    const users = await Promise.all([0, 1, 2].map((i) => createDevice(sys.platformUrl, `+1555300000${i}`)));
    // Users write first (canaries inbound too): their messages open the customer-service window.
    const inbound = `CANARY-IN-${randomUUID()}`;
    await openWindows(sys, users.slice(1));
    await userWrites(sys, users[0]!, `${inbound} héllo`);
    expect(sys.receiver.messages().some((m) => (m as { text?: { body: string } }).text?.body === `${inbound} héllo`)).toBe(true);
    const expected = new Map<string, string[]>();
    for (const [i, c] of canaries.entries()) {
      const waId = users[i % users.length]!;
      // A non-ASCII canary too: sealing must hide every encoding of it.
      const body = i === 0 ? `${c} grüße ✓` : c;
      await sendText(sys, `+${waId}`, body);
      expected.set(waId, [...(expected.get(waId) ?? []), body]);
    }
    await waitFor(async () => {
      const shown = await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)));
      return shown.every((m, i) => m.length === (expected.get(users[i]!)?.length ?? 0));
    }, 'devices to show every canary');
    // The devices really got the plaintext (so the scan below is meaningful) ...
    expect((await deviceMessages(sys.platformUrl, users[0]!))[0]!.text!.body).toContain(canaries[0]);
    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    expect(dump.size).toBeGreaterThan(10);
    for (const c of [...canaries, inbound]) {
      expect(keysContaining(dump, c), `keys holding ${c}`).toEqual([]);
      expect(keysContaining(dump, Buffer.from(c).toString('base64').slice(0, 24)), `keys holding ${c} in base64`).toEqual([]);
      expect(capturedLogs.filter((l) => l.includes(c))).toEqual([]);
    }
    // ... and phone numbers never appear unmasked in logs.
    for (const w of users) expect(capturedLogs.filter((l) => l.includes(w))).toEqual([]);
  });
});
