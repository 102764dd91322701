import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { mastersOf } from '../src/redis/connect.ts';

/**
 * What the bench measures outside its own process: Sealpost's roles started as processes of their own, their
 * CPU and memory from /proc, and Redis's calls and CPU from INFO.
 */

/** A role of Sealpost in a process of its own: where it listens, its CPU so far, and how to stop it. */
export interface Spawned {
  url: string;
  cpuMs(): number;
  close(): Promise<void>;
}

/** Starts `src/cli.ts <args>` and waits for the line that says where it listens. */
async function spawnRole(args: string[], env: NodeJS.ProcessEnv, listening: RegExp, what: string): Promise<Spawned> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env: { ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the ${what} process did not start within 60 s`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = listening.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${what} process exited (${code}) before listening`));
    });
  });
  return {
    url,
    cpuMs: () => procCpuMs(child.pid ?? 0),
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * The platform (transport and simulated devices) in a process of its own, as it is in a deployment (another
 * party's machines): its CPU is then measured apart from the router's, and it has its own event loop.
 */
export function spawnPlatform(): Promise<Spawned> {
  // The transport gets none of the router's settings or secrets (master key, Redis): only what Node needs.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(SEALPOST_|REDIS_|ADMIN_)/.test(k)));
  return spawnRole(['platform', '--port', '0'], env, /platform listening on (\S+)/, 'platform');
}

/**
 * The API in a process of its own, as in a deployment (API processes apart from workers): its CPU per accepted
 * message is measured apart from the load generator's and the webhook receiver's in the bench process.
 */
export function spawnApi(env: NodeJS.ProcessEnv): Promise<Spawned> {
  return spawnRole(['api', '--port', '0'], env, /API on (http:\/\/\S+)/, 'API');
}

/** Resident set size (MB) of a process, from /proc (Linux); 0 where unavailable. */
export function procRssMb(pid: number): number {
  try {
    const kb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    return Math.round(kb / 102.4) / 10;
  } catch {
    return 0;
  }
}

export const RSS_CHECKPOINTS = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000];

/** CPU time (ms) a process used so far, from /proc (Linux); 0 where unavailable. */
export function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the command name), in clock ticks.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** Commands Redis ran so far (INFO commandstats, every master of a cluster): all, and script calls (EVAL/EVALSHA/FCALL). */
export async function redisCalls(r: Redis): Promise<{ all: number; scripts: number; byName: Map<string, number> }> {
  let all = 0;
  let scripts = 0;
  const byName = new Map<string, number>();
  for (const node of await mastersOf(r)) {
    const info = await node.info('commandstats');
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      all += Number(m[2]);
      byName.set(m[1]!, (byName.get(m[1]!) ?? 0) + Number(m[2]));
      if (/^(eval|evalsha|fcall)/.test(m[1]!)) scripts += Number(m[2]);
    }
  }
  return { all, scripts, byName };
}

/** The commands that made most of a phase's calls (inner script commands included), per message. */
export function topCommands(before: Map<string, number>, after: Map<string, number>, messages: number, n = 12): Record<string, number> {
  return Object.fromEntries([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const)
    .filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, v]) => [k, Number((v / messages).toFixed(1))]));
}

/** Redis's own CPU time (ms) so far (INFO cpu, every master of a cluster), main thread and children. */
export async function redisCpuMs(r: Redis): Promise<number> {
  let ms = 0;
  for (const node of await mastersOf(r)) {
    const info = await node.info('cpu');
    const v = (k: string) => Number(new RegExp(`\\b${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
    ms += (v('used_cpu_user') + v('used_cpu_sys')) * 1000;
  }
  return ms;
}

/**
 * Waits until a process group is idle: `cpuMs` (their CPU so far, in 10 ms ticks from /proc) grows by at most
 * 10 % of one core over each of two consecutive 250 ms windows. False when that did not happen within `maxMs`.
 */
export async function waitCpuQuiet(cpuMs: () => number, maxMs: number): Promise<boolean> {
  const windowMs = 250;
  const deadline = Date.now() + maxMs;
  let quietWindows = 0;
  let last = cpuMs();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, windowMs));
    const now = cpuMs();
    quietWindows = now - last <= windowMs * 0.1 ? quietWindows + 1 : 0;
    last = now;
    if (quietWindows >= 2) return true;
  }
  return false;
}

/**
 * An OTLP/HTTP endpoint that takes trace exports and discards them (`bench --tracing`): the router pays for
 * making, batching, encoding and sending its spans, as it would to a real collector, without one running here.
 */
export async function startOtlpSink(): Promise<{ url: string; stats(): { exports: number; bytes: number }; close(): Promise<void> }> {
  let exports = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => void (bytes += c.length));
    req.on('end', () => {
      exports++;
      // An empty body is an ExportTraceServiceResponse with nothing rejected, in both encodings.
      const json = String(req.headers['content-type']).startsWith('application/json');
      res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : undefined);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats: () => ({ exports, bytes }),
    close: () => new Promise((r) => server.close(() => r())),
  };
}
