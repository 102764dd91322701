/**
 * The bench's users with linked devices (`--devices-per-user`): linking companions, and waiting until every
 * device shows what was sent (docs/performance.md, "Devices per user").
 */
import type { HttpJsonClient } from '../src/runtime/http-json.ts';


/**
 * Links `devicesPerUser - 1` companions to every user (own identity, registration id and prekeys; the phone
 * signs a new device list each time), before any message, so the router meets all of them at first contact.
 * Returns each user's devices, the phone (1) first.
 */
export async function linkCompanions(sim: HttpJsonClient, users: string[], devicesPerUser: number, log: (s: string) => void): Promise<Map<string, number[]>> {
  const devicesOf = new Map<string, number[]>(users.map((u) => [u, [1]]));
  log(`linking ${devicesPerUser - 1} companion(s) to each of ${users.length} users…`);
  await pool(users, 16, async (u) => {
    for (let j = 1; j < devicesPerUser; j++) {
      const { status, json } = await sim.request('POST', `/sim/devices/${u}/linked`, { prekeys: 1 }, 60_000);
      const id = (json as { device_id?: number } | null)?.device_id;
      if (status !== 200 || typeof id !== 'number') throw new Error(`could not link a companion: ${status} ${JSON.stringify(json)}`);
      devicesOf.get(u)!.push(id);
    }
  });
  return devicesOf;
}

/**
 * Waits until every device of every user shows every message sent to that user (`sent`: wamid and user), as
 * the devices' own views say (`GET /sim/devices/{wa_id}/messages?device=N`; the platform has no counter of
 * shown envelopes). Only (user, device) pairs still missing something are asked again. Returns the device
 * envelopes counted there: one per message and device that shows it. Gives up after two minutes (or 20 ms
 * per envelope) without progress.
 */
export async function devicesShow(
  sim: HttpJsonClient, devicesOf: Map<string, number[]>, devicesPerUser: number, sent: { wamid: string; to: string }[], what: string, log: (s: string) => void,
): Promise<number> {
  const expected = new Map<string, Set<string>>();
  for (const s of sent) {
    let set = expected.get(s.to);
    if (!set) expected.set(s.to, (set = new Set()));
    set.add(s.wamid);
  }
  let pending = [...expected.keys()].flatMap((u) => devicesOf.get(u)!.map((d) => ({ u, d })));
  const pairs = pending.length;
  let shown = 0;
  const stallMs = Math.max(120_000, sent.length * devicesPerUser * 20);
  let lastProgress = Date.now();
  let lastLog = Date.now();
  for (let sweep = 0; pending.length > 0; sweep++) {
    if (sweep > 0) await new Promise((r) => setTimeout(r, 20));
    const done = await pool(pending, 32, async ({ u, d }) => {
      const { status, json } = await sim.request('GET', `/sim/devices/${u}/messages?device=${d}`, undefined, 60_000);
      if (status !== 200) throw new Error(`${what}: device ${d} of a user: ${status} ${JSON.stringify(json)}`);
      const ids = new Set(((json as { messages: { id: string }[] }).messages).map((m) => m.id));
      const want = expected.get(u)!;
      for (const id of want) if (!ids.has(id)) return false;
      return true;
    });
    const still = pending.filter((_, i) => !done[i]);
    for (let i = 0; i < pending.length; i++) if (done[i]) shown += expected.get(pending[i]!.u)!.size;
    if (still.length < pending.length) lastProgress = Date.now();
    pending = still;
    if (Date.now() - lastLog > 15_000) {
      log(`${what}: ${pairs - pending.length}/${pairs} devices show every message`);
      lastLog = Date.now();
    }
    if (pending.length > 0 && Date.now() - lastProgress > stallMs) {
      throw new Error(`timed out waiting for ${what}: ${pending.length} of ${pairs} devices still miss messages after ${Math.round(stallMs / 1000)} s without progress`);
    }
  }
  return shown;
}

/** Runs `fn` over `items` with at most `width` in flight, keeping the results in order. */
export async function pool<T, R>(items: T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  }));
  return out;
}
