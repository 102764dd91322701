/**
 * `bench --group-members N`: sends to groups (docs/groups.md, "Sending") against sends to one user each, in
 * the same run: G groups of N members, every member's sessions and the group's sender key distributed in a
 * warm-up, then M group sends (each encrypted once, relayed to every member) and M one-to-one sends to the
 * same users. Reported: group sends per second, member deliveries per second, and the router's CPU (worker
 * processes + Redis) per group send against per one-to-one send (docs/performance.md, "Groups").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../src/config.ts';
import { configureLogging } from '../src/log.ts';
import { createRouterContext } from '../src/runtime/router.ts';
import { startWebhookReceiver } from '../src/webhook/receiver.ts';
import { HttpJsonClient } from '../src/runtime/http-json.ts';
import { deleteByPrefix } from '../src/redis/prefix.ts';
import { connectRedis } from '../src/redis/connect.ts';
import { procCpuMs, redisCalls, redisCpuMs, spawnApi, spawnPlatform, waitCpuQuiet } from './measure.ts';
import { pool } from './devices.ts';

export interface GroupBenchResult {
  groups: number;
  group_members: number;
  messages: number;
  workers: number;
  group_sends_per_s: number;
  /** Group sends per second times the members each reaches. */
  member_deliveries_per_s: number;
  one_to_one_per_s: number;
  router_cpu_ms_per_group_send: number;
  router_cpu_ms_per_member_delivery: number;
  router_cpu_ms_per_one_to_one: number;
  /** Router CPU of one group send over that of one one-to-one send (8 one-to-one sends would be 8). */
  group_send_cost_in_one_to_one_sends: number;
  redis_commands_per_group_send: number;
  redis_commands_per_one_to_one: number;
  platform_cpu_ms_per_group_send: number;
}

type Json = Record<string, any>;

export async function runGroupBench(opts: { redisUrl: string; groups: number; members: number; messages: number; workers: number; log?: (s: string) => void }): Promise<GroupBenchResult> {
  const log = opts.log ?? (() => {});
  if (!(opts.members >= 1 && opts.members <= 8)) throw new Error('a group has 1 to 8 members');
  if (opts.workers < 1) throw new Error('the group bench needs a worker process');
  configureLogging({ level: 'warn' });
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const masterKey = randomBytes(32);
  const env = { SEALPOST_PREFIX: prefix, SEALPOST_MASTER_KEY: masterKey.toString('base64'), SEALPOST_WORKER_CONCURRENCY: '256', SEALPOST_RETRANSMIT_BASE_MS: '30000' };
  const config = loadConfig({ ...env, REDIS_URL: opts.redisUrl });
  const platform = await spawnPlatform();
  const ctx = createRouterContext(config, opts.redisUrl, masterKey, platform.url);
  const children: ChildProcess[] = [];
  const parentEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  for (let i = 0; i < opts.workers; i++) {
    children.push(spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: { ...parentEnv, ...env, REDIS_URL: opts.redisUrl, PLATFORM_URL: platform.url, LOG_LEVEL: 'warn' }, stdio: 'ignore' }));
  }
  const apiProcess = await spawnApi({ ...parentEnv, ...env, REDIS_URL: opts.redisUrl, PLATFORM_URL: platform.url });
  const delivered = new Set<string>();
  const failed = new Map<string, number>();
  const created = new Map<string, { group_id: string; invite_link: string }>();
  const receiver = await startWebhookReceiver({
    appSecret: 'bench-secret', verifyToken: 'v',
    onUpdate: (w) => {
      for (const ch of w.body.entry[0].changes as Json[]) {
        for (const s of ch.value.statuses ?? []) {
          if (s.status === 'delivered') delivered.add(s.id);
          else if (s.status === 'failed') failed.set(s.id, s.errors?.[0]?.code ?? 0);
        }
        if (ch.field === 'group_lifecycle_update') for (const g of ch.value.groups ?? []) if (g.group_id) created.set(g.request_id, g);
      }
    },
  });
  const sim = new HttpJsonClient(platform.url, 32);
  const api = new HttpJsonClient(apiProcess.url, 128);
  const r = connectRedis(opts.redisUrl);
  try {
    const biz = await ctx.businesses.create({ name: 'Bench', webhookUrl: receiver.url, appSecret: 'bench-secret', verifyToken: 'v', throughputMps: 1000 });
    await ctx.publisher.ensure(biz.phone_number_id);
    await sim.request('POST', `/sim/numbers/${encodeURIComponent(biz.display_phone_number)}/integrity`, { tier: 4 }, 10_000);
    const auth = { authorization: `Bearer ${biz.access_token}` };
    const call = async (method: string, path: string, body: unknown): Promise<Json> => {
      for (let attempt = 0; ; attempt++) {
        const { json } = await api.request(method, path, body, 60_000, auth);
        const code = (json as Json | null)?.error?.code;
        if ((code === 130429 || code === 131056 || code === 131208) && attempt < 100) {
          await new Promise((res) => setTimeout(res, 50));
          continue;
        }
        if (code) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
        return json as Json;
      }
    };
    const waitAll = async (ids: string[], what: string) => {
      let last = Date.now();
      let pending = ids.filter((id) => !delivered.has(id));
      while (pending.length) {
        await new Promise((res) => setTimeout(res, 20));
        const still = pending.filter((id) => !delivered.has(id));
        const f = still.find((id) => failed.has(id));
        if (f) throw new Error(`${what}: a message failed with ${failed.get(f)}`);
        if (still.length < pending.length) last = Date.now();
        pending = still;
        if (pending.length && Date.now() - last > 120_000) throw new Error(`${what}: ${pending.length} of ${ids.length} not delivered after two minutes without progress`);
      }
    };
    log(`${opts.groups} groups of ${opts.members} members…`);
    const groups: string[] = [];
    const users: string[] = [];
    for (let i = 0; i < opts.groups; i++) {
      const { request_id } = await call('POST', `/v23.0/${biz.phone_number_id}/groups`, { messaging_product: 'whatsapp', subject: `bench ${i}` });
      while (!created.has(request_id)) await new Promise((res) => setTimeout(res, 10));
      const g = created.get(request_id)!;
      groups.push(g.group_id);
      for (let m = 0; m < opts.members; m++) {
        const { json } = await sim.request('POST', '/sim/devices', { phone: `+1778${String(i).padStart(4, '0')}${String(m).padStart(3, '0')}`, prekeys: 1 }, 10_000);
        const wa = (json as Json).wa_id as string;
        users.push(wa);
        await sim.request('POST', `/sim/devices/${wa}/groups/join`, { invite_link: g.invite_link }, 10_000);
      }
    }
    for (const g of groups) {
      for (;;) {
        const { json } = await sim.request('GET', `/v1/groups/${g}`, undefined, 10_000);
        if (((json as Json).members as string[]).length === opts.members) break;
        await new Promise((res) => setTimeout(res, 20));
      }
    }
    const template = { type: 'template', template: { name: 'bench', language: { code: 'en' } } };
    const sendGroup = async (g: string) => (await call('POST', `/v23.0/${biz.phone_number_id}/messages`, { messaging_product: 'whatsapp', recipient_type: 'group', to: g, ...template })).messages[0].id as string;
    const sendOne = async (to: string) => (await call('POST', `/v23.0/${biz.phone_number_id}/messages`, { messaging_product: 'whatsapp', to, ...template })).messages[0].id as string;
    // Warm-up: sessions with every member, the groups' sender keys distributed, every user's conversation established.
    log('warm-up: sessions and sender keys…');
    await waitAll(await pool(groups, 64, sendGroup), 'warm-up group sends');
    await waitAll(await pool(users, 64, sendOne), 'warm-up one-to-one sends');
    const workersCpu = () => children.reduce((a, c) => a + procCpuMs(c.pid ?? 0), 0);
    const phase = async (what: string, targets: string[], send: (t: string) => Promise<string>) => {
      await waitCpuQuiet(workersCpu, 10_000);
      const [w0, p0, rc0, calls0, t0] = [workersCpu(), platform.cpuMs(), await redisCpuMs(r), await redisCalls(r), Date.now()];
      const ids = await pool(Array.from({ length: opts.messages }, (_, i) => targets[i % targets.length]!), 64, send);
      await waitAll(ids, what);
      const seconds = (Date.now() - t0) / 1000;
      // Receipts from members' other devices and the last commits: read once the workers are idle again.
      await waitCpuQuiet(workersCpu, 10_000);
      const [w1, p1, rc1, calls1] = [workersCpu(), platform.cpuMs(), await redisCpuMs(r), await redisCalls(r)];
      return { perS: opts.messages / seconds, routerMs: (w1 - w0 + rc1 - rc0) / opts.messages, platformMs: (p1 - p0) / opts.messages, commands: (calls1.all - calls0.all) / opts.messages };
    };
    log(`${opts.messages} group sends…`);
    const grp = await phase('group sends', groups, sendGroup);
    log(`${opts.messages} one-to-one sends…`);
    const one = await phase('one-to-one sends', users, sendOne);
    const f3 = (n: number) => Number(n.toFixed(3));
    return {
      groups: opts.groups, group_members: opts.members, messages: opts.messages, workers: opts.workers,
      group_sends_per_s: Math.round(grp.perS),
      member_deliveries_per_s: Math.round(grp.perS * opts.members),
      one_to_one_per_s: Math.round(one.perS),
      router_cpu_ms_per_group_send: f3(grp.routerMs),
      router_cpu_ms_per_member_delivery: f3(grp.routerMs / opts.members),
      router_cpu_ms_per_one_to_one: f3(one.routerMs),
      group_send_cost_in_one_to_one_sends: Number((grp.routerMs / one.routerMs).toFixed(2)),
      redis_commands_per_group_send: Number(grp.commands.toFixed(1)),
      redis_commands_per_one_to_one: Number(one.commands.toFixed(1)),
      platform_cpu_ms_per_group_send: f3(grp.platformMs),
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    r.disconnect();
    await apiProcess.close();
    await ctx.close();
    await receiver.close();
    sim.close();
    api.close();
    await platform.close();
    await deleteByPrefix(opts.redisUrl, prefix);
  }
}
