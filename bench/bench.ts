import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import * as S from '@signalapp/libsignal-client';
import { loadConfig } from '../src/config.ts';
import { configureLogging } from '../src/log.ts';
import { startPlatform } from '../src/platform/server.ts';
import { createRouterContext } from '../src/runtime/router.ts';
import { startWorkers } from '../src/compose.ts';
import { startWebhookReceiver } from '../src/webhook/receiver.ts';
import { ConversationCrypto } from '../src/signal/conversation-crypto.ts';
import { generateKeys } from '../src/signal/prekeys.ts';
import { PartyStores } from '../src/platform/device-stores.ts';
import { conversationOfWamid } from '../src/runtime/ids.ts';
import { HttpJsonClient } from '../src/runtime/http-json.ts';
import { deleteByPrefix } from '../src/redis/prefix.ts';
import { bullConnection, connectRedis, scanEach } from '../src/redis/connect.ts';
import { procCpuMs, procRssMb, redisCalls, redisCpuMs, RSS_CHECKPOINTS, spawnApi, spawnPlatform, startOtlpSink, topCommands, waitCpuQuiet } from './measure.ts';
import { devicesShow, linkCompanions, pool } from './devices.ts';

/** What `bench --json` prints (CONTRACT.md names the required fields). */
export interface BenchResult {
  msgs_per_s: number;
  p50_ms: number;
  p99_ms: number;
  crypto_ceiling_msgs_per_s: number;
  bullmq_noop_jobs_per_s: number;
  ratio_to_crypto_ceiling: number;
  ratio_to_bullmq_noop: number;
  first_contact_per_s: number;
  /**
   * CPU ms per first contact: the bench process (API), the platform process (the devices decrypt the PreKey
   * message and generate replacement one-time keys) and the worker processes (bundle fetch, PQXDH, encrypt).
   */
  first_contact_cpu_ms: { bench_process: number; api_process: number; platform_process: number; workers: number };
  conversations: number;
  messages: number;
  workers: number;
  redis_bytes_per_conversation: number;
  /** Per kind of key (snapshot, session, trace, message rows...), bytes per idle conversation. */
  redis_bytes_by_kind: Record<string, number>;
  /**
   * Accept → delivered quantiles (`p0` … `p100`, ms) of the latency phase and of the throughput phase, for the
   * latency chart (`--matrix … --out` draws them).
   */
  latency_quantiles_ms: Record<string, number>;
  saturated_latency_quantiles_ms: Record<string, number>;
  /** Accept → delivered at saturation (the throughput phase), for comparison with p50/p99 at half rate. */
  saturated_p50_ms: number;
  saturated_p99_ms: number;
  /** The offered rate of the latency phase (half the measured throughput). */
  latency_phase_rate_per_s: number;
  /**
   * CPU per message in the throughput phase: the bench process (API, the backend's client, the webhook receiver),
   * the worker processes, the platform process (transport and devices), Redis; the router's own share beyond
   * the API (workers and Redis); and all of them.
   */
  cpu_ms_per_message: number;
  /** `--tracing`: the API and worker processes traced every message (the sink's bytes and exports below). */
  tracing: boolean;
  otlp_bytes_per_message?: number;
  otlp_exports?: number;
  /** The API process per accepted message: token, limits, idempotency, the message row and the mailbox write. */
  api_cpu_ms_per_message: number;
  worker_cpu_ms_per_message: number;
  platform_cpu_ms_per_message: number;
  router_cpu_ms_per_message: number;
  redis_cpu_ms_per_message: number;
  total_cpu_ms_per_message: number;
  /** Redis commands per message in the throughput phase (commands inside scripts included), and script calls. */
  redis_commands_per_message: number;
  redis_scripts_per_message: number;
  /**
   * The same in the latency phase (paced: few events per drain, so each message pays its own wake-up, drain and
   * commits): worker and router (workers + Redis) CPU and Redis commands per message sent in it.
   */
  paced_worker_cpu_ms_per_message: number;
  paced_router_cpu_ms_per_message: number;
  paced_redis_commands_per_message: number;
  /** The most-called Redis commands of the throughput phase, per message (inner script commands included). */
  redis_commands_by_name: Record<string, number>;
  /** Resident memory of the worker processes (MB, summed), at the end of the run. */
  worker_rss_mb: number;
  /**
   * Worker RSS (MB, summed) as the number of established conversations grew during first contact: keyed
   * by conversations (1,000, 2,000, 5,000, 10,000, 20,000, 50,000, 100,000: those the run reached).
   */
  worker_rss_mb_by_conversations: Record<string, number>;
  /** Sends the API answered with 130429/131056 (the number's throughput or the pair limit) and the bench resent. */
  sends_resent_after_limits: number;
  /** The business's phone numbers the users are spread over (each 1,000 messages a second at most). */
  numbers: number;
  /** `--devices-per-user`: each bench user's devices, the phone plus `devices_per_user - 1` linked companions. */
  devices_per_user: number;
  /**
   * Device envelopes delivered per second in the throughput phase: counted on the devices (each device's view,
   * `GET /sim/devices/{wa_id}/messages?device=N`: the phase's messages it shows), over the phase's time, which
   * with companions runs until every device of every user shows every message.
   */
  envelopes_per_s: number;
  /**
   * The router's CPU (workers + Redis) per device envelope in the throughput phase: `router_cpu_ms_per_message`
   * divided by the envelopes per message the devices showed (= `devices_per_user`, since the phase waits for
   * every device to show every message).
   */
  router_cpu_ms_per_envelope: number;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
};

/** The points of a latency distribution the chart draws: every 5th percentile, and the tail. */
export const QUANTILES = [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 97.5, 99, 99.5, 99.9, 100];

/** Latencies at {@link QUANTILES}, keyed `p<q>`. */
function quantiles(xs: number[]): Record<string, number> {
  return Object.fromEntries(QUANTILES.map((q) => [`p${q}`, quantile(xs, Math.min(q / 100, 0.999999))]));
}

/** libsignal alone: encrypt on the business side and decrypt on the device side, one established session per pair. */
async function cryptoCeiling(messages: number): Promise<number> {
  const biz = { identity: S.IdentityKeyPair.generate(), registrationId: 1 };
  const devKeys = generateKeys({ oneTime: 1 });
  const dev = new PartyStores(devKeys);
  const router = new ConversationCrypto(biz, '15550000000', '15551111111', { session: null, remoteIdentity: null });
  const pre = devKeys.preKeys[0]!;
  const kyb = devKeys.kyberPreKeys[0]!;
  await router.processBundle(S.PreKeyBundle.new(devKeys.registrationId, 1, pre.id(), pre.publicKey(), devKeys.signedPreKey.id(),
    devKeys.signedPreKey.publicKey(), devKeys.signedPreKey.signature(), devKeys.identity.publicKey, kyb.id(), kyb.publicKey(), kyb.signature()), new Date());
  const bizAddr = S.ProtocolAddress.new('15550000000', 1);
  const usrAddr = S.ProtocolAddress.new('15551111111', 1);
  const decrypt = async (m: { type: number; body: Uint8Array }) => m.type === 3
    ? S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(new Uint8Array(m.body)), bizAddr, usrAddr, dev.sessions, dev.identities, dev.preKeys, dev.signedPreKeys, dev.kyberPreKeys)
    : S.signalDecrypt(S.SignalMessage.deserialize(new Uint8Array(m.body)), bizAddr, usrAddr, dev.sessions, dev.identities);
  await decrypt(await router.encrypt(new Uint8Array(200), new Date()));
  const ack = await S.signalEncrypt(new Uint8Array(10), bizAddr, usrAddr, dev.sessions, dev.identities);
  await router.decrypt({ type: ack.type(), body: ack.serialize() });
  const pt = new Uint8Array(200).fill(0x61);
  const t0 = performance.now();
  for (let i = 0; i < messages; i++) await decrypt(await router.encrypt(pt, new Date()));
  return messages / ((performance.now() - t0) / 1000);
}

/** BullMQ alone: no-op jobs through one worker (concurrency 16) on the same Redis. */
async function bullmqCeiling(redisUrl: string, prefix: string, jobs: number): Promise<number> {
  const connection = bullConnection(redisUrl) as never;
  const q = new Queue(`{noop}`, { connection, prefix: `${prefix}:q` });
  await q.addBulk(Array.from({ length: jobs }, (_, i) => ({ name: 'noop', data: { i }, opts: { removeOnComplete: true } })));
  let done = 0;
  const t0 = performance.now();
  const finished = new Promise<void>((resolve) => {
    const w = new Worker(`{noop}`, async () => {}, { connection, prefix: `${prefix}:q`, concurrency: 16 });
    w.on('completed', () => {
      if (++done === jobs) void w.close().then(resolve);
    });
  });
  await finished;
  const rate = jobs / ((performance.now() - t0) / 1000);
  await q.obliterate({ force: true });
  await q.close();
  if (typeof (connection as { disconnect?: unknown }).disconnect === 'function') (connection as { disconnect(): void }).disconnect();
  return rate;
}

/**
 * The end-to-end benchmark: API accept → conversation actor → Signal → transport → device decrypts →
 * `delivered` webhook received, over `conversations` established conversations, with `workers` worker
 * processes (0: in this process). Measures the crypto and BullMQ ceilings in the same run.
 */
export async function runBench(opts: {
  redisUrl: string; messages: number; conversations: number; workers: number; log?: (s: string) => void; profileDir?: string; latencyRate?: number;
  /** Run the platform (transport and devices) inside the bench process instead of its own process. */
  platformInline?: boolean;
  /** Tracing on in the API and worker processes: every span sampled, exported over OTLP to a sink that discards. */
  tracing?: boolean;
  /** Devices of each user (1 to 5): the phone plus this many minus one companions linked before the phases. */
  devicesPerUser?: number;
  /**
   * The business's phone numbers (1 to 16, default 4), each at the Cloud API's top throughput (1,000 messages a
   * second); user i talks to number i mod n. One number caps what the API accepts at 1,000/s, below what the
   * router is asked to reach, and the backend's resends past it would be measured as the router's cost.
   */
  numbers?: number;
}): Promise<BenchResult> {
  const log = opts.log ?? (() => {});
  const devicesPerUser = opts.devicesPerUser ?? 1;
  const numberCount = opts.numbers ?? 4;
  if (!(Number.isInteger(numberCount) && numberCount >= 1 && numberCount <= 16)) throw new Error('numbers must be 1 to 16');
  if (!(Number.isInteger(devicesPerUser) && devicesPerUser >= 1 && devicesPerUser <= 5)) throw new Error('devicesPerUser must be 1 to 5');
  configureLogging({ level: 'warn' });
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const masterKey = randomBytes(32);
  const env = { SEALPOST_PREFIX: prefix, SEALPOST_MASTER_KEY: masterKey.toString('base64'), SEALPOST_WORKER_CONCURRENCY: '256', SEALPOST_RETRANSMIT_BASE_MS: '30000' };
  const config = loadConfig({ ...env, REDIS_URL: opts.redisUrl });
  // Inline, its CPU is the bench process's (counted there).
  const platform = opts.platformInline ? { ...(await startPlatform({ port: 0 })), cpuMs: () => 0 } : await spawnPlatform();
  const ctx = createRouterContext(config, opts.redisUrl, masterKey, platform.url);
  const children: ChildProcess[] = [];
  // Tracing is the child processes' (the API's and the workers'); the caller's OTEL_* settings never leak in.
  const sink = opts.tracing ? await startOtlpSink() : undefined;
  const parentEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const otel = sink ? { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_TRACES_SAMPLER: 'always_on' } : {};
  const inProcess = opts.workers === 0 ? startWorkers(ctx) : undefined;
  for (let i = 0; i < opts.workers; i++) {
    const profile = opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [];
    children.push(spawn(process.execPath, [...profile, '--import', 'tsx', 'src/cli.ts', 'worker'], {
      env: { ...parentEnv, ...otel, ...env, REDIS_URL: opts.redisUrl, PLATFORM_URL: platform.url, LOG_LEVEL: 'warn' }, stdio: 'ignore',
    }));
  }
  const apiProcess = await spawnApi({ ...parentEnv, ...otel, ...env, REDIS_URL: opts.redisUrl, PLATFORM_URL: platform.url });
  const apiUrl = apiProcess.url;
  const delivered = new Map<string, number>();
  /** Messages that failed (wamid → error code): the bench stops on the first, naming it, instead of waiting. */
  const failed = new Map<string, number>();
  const receiver = await startWebhookReceiver({
    appSecret: 'bench-secret', verifyToken: 'v',
    onUpdate: (w) => {
      for (const ch of w.body.entry[0].changes) {
        for (const s of ch.value.statuses ?? []) {
          if (s.status === 'delivered') delivered.set(s.id, w.at);
          else if (s.status === 'failed') failed.set(s.id, s.errors?.[0]?.code ?? 0);
        }
      }
    },
  });
  // The platform's simulation routes, for linking companions and reading what each device shows.
  const sim = new HttpJsonClient(platform.url, 32);
  try {
    const biz = await ctx.businesses.create({ name: 'Bench', webhookUrl: receiver.url, appSecret: 'bench-secret', verifyToken: 'v', throughputMps: 1000 });
    const numbers: { phone_number_id: string; display_phone_number: string }[] = [biz];
    while (numbers.length < numberCount) numbers.push(await ctx.businesses.addNumber(biz.business_id, { throughputMps: 1000 }));
    for (const n of numbers) {
      await ctx.publisher.ensure(n.phone_number_id);
      // The bench's numbers are established senders (unlimited tier): a new number may reach only 250 users a
      // day outside the service window, and every conversation here is business-initiated.
      const standing = await fetch(`${platform.url}/sim/numbers/${encodeURIComponent(n.display_phone_number)}/integrity`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tier: 4 }),
      });
      if (!standing.ok) throw new Error(`could not set the bench number's messaging tier: ${standing.status}`);
    }
    // Which number writes to each user (user i: number i mod n).
    const numberOf = new Map<string, string>();
    const users: string[] = [];
    for (let i = 0; i < opts.conversations; i++) {
      const res = await fetch(`${platform.url}/sim/devices`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ phone: `+1777${String(i).padStart(7, '0')}`, prekeys: 1 }) });
      const waId = ((await res.json()) as { wa_id: string }).wa_id;
      users.push(waId);
      numberOf.set(waId, numbers[i % numbers.length]!.phone_number_id);
      if ((i + 1) % 20_000 === 0) log(`${i + 1}/${opts.conversations} devices registered`);
    }
    // `--devices-per-user n`: every user links n - 1 companions (own identity, registration id and prekeys; the
    // phone signs a new device list each time) before any message, so the router meets all of them at first contact.
    const devicesOf = devicesPerUser > 1 ? await linkCompanions(sim, users, devicesPerUser, log) : new Map(users.map((u) => [u, [1]]));
    // The business backend: a keep-alive HTTP client (as a load generator would be), not fetch, whose own
    // cost would be counted against the router on this one machine.
    const api = new HttpJsonClient(apiUrl, 128);
    let throttled = 0;
    const send = async (to: string): Promise<{ wamid: string; at: number }> => {
      // As a backend does: past the number's throughput (1,000/s here) the API answers 130429; wait and resend.
      for (let attempt = 0; ; attempt++) {
        const at = Date.now();
        const { json } = await api.request('POST', `/v23.0/${numberOf.get(to)}/messages`, {
          messaging_product: 'whatsapp', to, type: 'template', template: { name: 'bench', language: { code: 'en' } },
        }, 60_000, { authorization: `Bearer ${biz.access_token}` });
        const messages = (json as { messages?: { id: string }[] } | null)?.messages;
        if (messages) return { wamid: messages[0]!.id, at };
        const code = (json as { error?: { code?: number } } | null)?.error?.code;
        if ((code !== 130429 && code !== 131056) || attempt >= 100) throw new Error(`send failed: ${JSON.stringify(json)}`);
        throttled++;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    // Waits while deliveries progress: gives up only after a stretch without a single new one (two minutes,
    // or 20 ms per message for large phases: a 100,000-conversation first contact may go that long between
    // its first deliveries and the rest), so a long run finishes instead of hitting a fixed deadline.
    const waitDelivered = async (ids: string[], what: string) => {
      const stallMs = Math.max(120_000, ids.length * 20);
      let pending = ids.filter((id) => !delivered.has(id));
      let lastProgress = Date.now();
      let lastLog = Date.now();
      while (pending.length > 0) {
        await new Promise((r) => setTimeout(r, pending.length > 1000 ? 250 : 20));
        const still = pending.filter((id) => !delivered.has(id));
        const failure = still.find((id) => failed.has(id));
        if (failure) throw new Error(`${what}: a message failed with error ${failed.get(failure)} (${failed.size} failed so far)`);
        if (still.length < pending.length) lastProgress = Date.now();
        pending = still;
        if (Date.now() - lastLog > 15_000) {
          log(`${what}: ${ids.length - pending.length}/${ids.length} delivered`);
          lastLog = Date.now();
        }
        if (pending.length > 0 && Date.now() - lastProgress > stallMs) {
          throw new Error(`timed out waiting for ${what}: ${pending.length} of ${ids.length} not delivered after ${Math.round(stallMs / 1000)} s without progress`);
        }
      }
    };
    const waitDevicesShow = (sent: { wamid: string; to: string }[], what: string): Promise<number> => devicesShow(sim, devicesOf, devicesPerUser, sent, what, log);
    const workersCpu = () => children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0);
    // With companions, the router still takes their receipts after the devices show a message: the CPU of a
    // phase is read once the worker processes are idle again (at most 10 s), so it holds that work.
    const settle = async (what: string) => {
      if (devicesPerUser === 1 || children.length === 0) return;
      const t = Date.now();
      const quiet = await waitCpuQuiet(workersCpu, 10_000);
      log(`${what}: workers idle ${Date.now() - t} ms after every device showed every message${quiet ? '' : ' (not idle within 10 s)'}`);
    };
    // First contact: bundle fetch, PQXDH, the first PreKey message, for every conversation.
    log(`first contact with ${opts.conversations} users…`);
    const workersRss = () => Math.round(children.reduce((a, c) => a + procRssMb(c.pid ?? 0), 0) * 10) / 10;
    const rssByConversations: Record<string, number> = {};
    // Sampled as delivered first contacts pass each checkpoint (established conversations, all idle after).
    const sampler = setInterval(() => {
      for (const n of RSS_CHECKPOINTS) if (delivered.size >= n && !(n in rssByConversations)) rssByConversations[n] = workersRss();
    }, 200);
    let t0 = Date.now();
    const fcCpu0 = process.cpuUsage();
    const fcWorkerCpu0 = children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0);
    const fcPlatformCpu0 = platform.cpuMs();
    const fcApiCpu0 = apiProcess.cpuMs();
    try {
      const firsts = await pool(users, 256, send);
      await waitDelivered(firsts.map((f) => f.wamid), 'first contact');
      // With companions, first contact ends when each of them shows its first message too (a session each).
      if (devicesPerUser > 1) await waitDevicesShow(firsts.map((f, i) => ({ wamid: f.wamid, to: users[i]! })), 'first contact on every device');
    } catch (e) {
      // Printed when the phase fails too, so a long run that stalls still reports what it measured.
      log(`worker RSS (MB) by delivered first contacts, so far: ${JSON.stringify(rssByConversations)}`);
      throw e;
    } finally {
      clearInterval(sampler);
    }
    for (const n of RSS_CHECKPOINTS) if (opts.conversations >= n && !(n in rssByConversations)) rssByConversations[n] = workersRss();
    log(`worker RSS (MB) by established conversations: ${JSON.stringify(rssByConversations)}`);
    const firstContactPerS = opts.conversations / ((Date.now() - t0) / 1000);
    await settle('first contact');
    const fcCpu = process.cpuUsage(fcCpu0);
    const firstContactCpu = {
      bench_process: Number((((fcCpu.user + fcCpu.system) / 1000) / opts.conversations).toFixed(2)),
      api_process: Number(((apiProcess.cpuMs() - fcApiCpu0) / opts.conversations).toFixed(2)),
      platform_process: Number(((platform.cpuMs() - fcPlatformCpu0) / opts.conversations).toFixed(2)),
      workers: Number(((children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0) - fcWorkerCpu0) / opts.conversations).toFixed(2)),
    };

    log(`${opts.messages} messages over ${opts.conversations} established conversations…`);
    const r = connectRedis(opts.redisUrl);
    const cpu0 = process.cpuUsage();
    const workerCpu0 = children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0);
    const platformCpu0 = platform.cpuMs();
    const apiCpu0 = apiProcess.cpuMs();
    const redisCpu0 = await redisCpuMs(r);
    const calls0 = await redisCalls(r);
    t0 = Date.now();
    const targets = Array.from({ length: opts.messages }, (_, i) => users[i % users.length]!);
    const sent = await pool(targets, 256, send);
    await waitDelivered(sent.map((s) => s.wamid), 'delivery');
    // `delivered` is the first device's receipt: with companions the phase ends when every device of every user
    // shows every message (their views asked only from here on, so the asking does not load the phase before).
    const delivery = sent.map((s, i) => ({ wamid: s.wamid, to: targets[i]! }));
    let envelopes = 0;
    if (devicesPerUser > 1) {
      const t = Date.now();
      envelopes = await waitDevicesShow(delivery, 'delivery to every device');
      log(`every device showed every message ${Date.now() - t} ms after the last delivered webhook`);
    }
    const elapsed = (Date.now() - t0) / 1000;
    await settle('delivery');
    const cpu = process.cpuUsage(cpu0);
    const workerCpu = children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0) - workerCpu0;
    const platformCpu = platform.cpuMs() - platformCpu0;
    const apiCpu = apiProcess.cpuMs() - apiCpu0;
    const redisCpu = (await redisCpuMs(r)) - redisCpu0;
    const calls1 = await redisCalls(r);
    const saturated = sent.map((s) => delivered.get(s.wamid)! - s.at);
    const msgsPerS = opts.messages / elapsed;
    // One device: `delivered` is the phone's receipt, so the phase's time stands as before; the phone's view
    // is counted after it, outside the measured time.
    if (devicesPerUser === 1) envelopes = await waitDevicesShow(delivery, 'delivery to every device');

    // Latency at half the measured throughput: an open-loop sender at that rate, so queues stay short.
    const rate = opts.latencyRate ?? Math.max(1, Math.round(msgsPerS / 2));
    const latencyMessages = Math.min(opts.messages, Math.max(200, rate * 5));
    log(`latency: ${latencyMessages} messages at ${rate}/s (half the throughput)…`);
    const paced: Promise<{ wamid: string; at: number }>[] = [];
    const [pacedWorker0, pacedRedis0, pacedCalls0] = [workersCpu(), await redisCpuMs(r), await redisCalls(r)];
    const start = performance.now();
    for (let i = 0; i < latencyMessages; i++) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((res) => setTimeout(res, wait));
      paced.push(send(users[(i * 7) % users.length]!));
    }
    const pacedSent = await Promise.all(paced);
    await waitDelivered(pacedSent.map((s) => s.wamid), 'latency phase');
    await settle('latency phase');
    const pacedWorker = workersCpu() - pacedWorker0;
    const pacedRedis = (await redisCpuMs(r)) - pacedRedis0;
    const pacedCalls = (await redisCalls(r)).all - pacedCalls0.all;
    const latencies = pacedSent.map((s) => delivered.get(s.wamid)! - s.at);

    // Idle established conversations: their Redis footprint, per kind of key.
    const convs = new Set(sent.map((s) => conversationOfWamid(s.wamid)!));
    const byKind: Record<string, number> = {};
    let bytes = 0;
    await scanEach(r, `${prefix}:{c:*`, async (keys) => {
      for (const k of keys) {
        const conv = /\{c:([^}]+)\}/.exec(k)?.[1];
        if (!conv || !convs.has(conv)) continue;
        const size = Number((await r.call('MEMORY', 'USAGE', k, 'SAMPLES', '0')) ?? 0);
        const kind = k.slice(k.indexOf('}:') + 2).replace(/^m:.*/, 'message rows');
        byKind[kind] = (byKind[kind] ?? 0) + size;
        bytes += size;
      }
    });
    r.disconnect();

    log('ceilings: libsignal alone, BullMQ alone…');
    const crypto = await cryptoCeiling(Math.min(opts.messages, 2000));
    const noop = await bullmqCeiling(opts.redisUrl, prefix, 5000);
    const parentMs = (cpu.user + cpu.system) / 1000;
    return {
      msgs_per_s: Math.round(msgsPerS),
      p50_ms: quantile(latencies, 0.5),
      p99_ms: quantile(latencies, 0.99),
      crypto_ceiling_msgs_per_s: Math.round(crypto),
      bullmq_noop_jobs_per_s: Math.round(noop),
      ratio_to_crypto_ceiling: Number((msgsPerS / crypto).toFixed(3)),
      ratio_to_bullmq_noop: Number((msgsPerS / noop).toFixed(3)),
      first_contact_per_s: Math.round(firstContactPerS),
      first_contact_cpu_ms: firstContactCpu,
      conversations: opts.conversations,
      messages: opts.messages,
      workers: opts.workers,
      redis_bytes_per_conversation: Math.round(bytes / convs.size),
      redis_bytes_by_kind: Object.fromEntries(Object.entries(byKind).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Math.round(v / convs.size)])),
      latency_quantiles_ms: quantiles(latencies),
      saturated_latency_quantiles_ms: quantiles(saturated),
      saturated_p50_ms: quantile(saturated, 0.5),
      saturated_p99_ms: quantile(saturated, 0.99),
      latency_phase_rate_per_s: rate,
      // The bench process: the backend's client and the webhook receiver (the workers too with --workers 0, the
      // platform too with --platform-inline).
      cpu_ms_per_message: Number((parentMs / opts.messages).toFixed(3)),
      api_cpu_ms_per_message: Number((apiCpu / opts.messages).toFixed(3)),
      worker_cpu_ms_per_message: Number((workerCpu / opts.messages).toFixed(3)),
      // The platform's own process: the transport and the users' devices (someone else's machines in a deployment).
      platform_cpu_ms_per_message: Number((platformCpu / opts.messages).toFixed(3)),
      router_cpu_ms_per_message: Number(((workerCpu + redisCpu) / opts.messages).toFixed(3)),
      // Redis's whole CPU in the phase: exact on a Redis of the bench's own, an upper bound on a shared one.
      redis_cpu_ms_per_message: Number((redisCpu / opts.messages).toFixed(3)),
      total_cpu_ms_per_message: Number(((parentMs + apiCpu + workerCpu + redisCpu + platformCpu) / opts.messages).toFixed(3)),
      redis_commands_per_message: Number(((calls1.all - calls0.all) / opts.messages).toFixed(1)),
      redis_scripts_per_message: Number(((calls1.scripts - calls0.scripts) / opts.messages).toFixed(1)),
      paced_worker_cpu_ms_per_message: Number((pacedWorker / latencyMessages).toFixed(3)),
      paced_router_cpu_ms_per_message: Number(((pacedWorker + pacedRedis) / latencyMessages).toFixed(3)),
      paced_redis_commands_per_message: Number((pacedCalls / latencyMessages).toFixed(1)),
      redis_commands_by_name: topCommands(calls0.byName, calls1.byName, opts.messages),
      worker_rss_mb: workersRss(),
      worker_rss_mb_by_conversations: rssByConversations,
      sends_resent_after_limits: throttled,
      devices_per_user: devicesPerUser,
      numbers: numberCount,
      envelopes_per_s: Math.round(envelopes / elapsed),
      router_cpu_ms_per_envelope: Number(((workerCpu + redisCpu) / envelopes).toFixed(3)),
      tracing: !!sink,
      // What the processes had exported by the end of the run (their last batches are flushed at shutdown).
      ...(sink ? { otlp_bytes_per_message: Math.round(sink.stats().bytes / opts.messages), otlp_exports: sink.stats().exports } : {}),
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await apiProcess.close();
    await inProcess?.close();
    await ctx.close();
    await receiver.close();
    sim.close();
    await platform.close();
    await sink?.close();
    await deleteByPrefix(opts.redisUrl, prefix);
  }
}
