/** Registers a simulated device; returns its wa_id. */
export async function createDevice(platformUrl: string, phone: string): Promise<string> {
  const res = await fetch(`${platformUrl}/sim/devices`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ phone }) });
  if (!res.ok) throw new Error(`device create failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { wa_id: string }).wa_id;
}

/** What a device shows its user (`device`: 1, the phone, or a linked companion's id). */
export async function deviceMessages(platformUrl: string, waId: string, device = 1): Promise<{ id: string; text?: { body: string }; arrivals: number }[]> {
  const res = await fetch(`${platformUrl}/sim/devices/${waId}/messages?device=${device}`);
  return ((await res.json()) as { messages: { id: string; text?: { body: string }; arrivals: number }[] }).messages;
}

/** A device's decryption statistics. */
export async function deviceStats(platformUrl: string, waId: string, device = 1): Promise<{ decrypted: number; duplicates: number; key_reuse: number; failures: Record<string, number>; held: number; identity_changes: number }> {
  const res = await fetch(`${platformUrl}/sim/devices/${waId}/stats?device=${device}`);
  return (await res.json()) as never;
}

/** Polls `check` until it returns true (bounded): tests wait for the event, never a fixed sleep. */
export async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
