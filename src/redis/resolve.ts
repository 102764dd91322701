import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { Redis } from 'ioredis';
import { connectRedis, isClusterUrl } from './connect.ts';

/** Where the Redis the process uses came from. */
export type RedisSource = 'env' | 'default' | 'spawned';

/** The outcome of Redis resolution. */
export interface ResolvedRedis {
  url: string;
  source: RedisSource;
}

/** Raised when no Redis can be found or started; its message says how to get one. */
export class RedisUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisUnavailableError';
  }
}

const INSTALL_HINT =
  'install Redis 6.2+ (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`) ' +
  'or point REDIS_URL at one';

/** Answers true when a Redis at `url` replies to PING within `timeoutMs`. */
export async function redisAnswers(url: string, timeoutMs = 700): Promise<boolean> {
  if (isClusterUrl(url)) {
    // A cluster answers when its nodes do and it serves every slot.
    const c = connectRedis(url, { lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 0 });
    c.on('error', () => {});
    try {
      await Promise.race([c.connect(), new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), timeoutMs * 3))]);
      return /cluster_state:ok/.test(String(await c.call('CLUSTER', 'INFO')));
    } catch {
      return false;
    } finally {
      c.disconnect();
    }
  }
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const full = path.join(dir, cmd);
    if (dir && existsSync(full)) return full;
  }
  return undefined;
}

/**
 * Starts a private `redis-server` (AOF on, data in `dataDir`) as a daemon, or reuses the one a previous
 * command started there, and returns its URL.
 */
export async function startOwnRedis(dataDir: string, extraArgs: string[] = []): Promise<string> {
  const bin = onPath('redis-server');
  if (!bin) throw new RedisUnavailableError(`No Redis answered and redis-server is not on PATH: ${INSTALL_HINT}.`);
  const dir = path.resolve(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const portFile = path.join(dir, 'port');
  if (existsSync(portFile)) {
    const port = Number(readFileSync(portFile, 'utf8').trim());
    const url = `redis://127.0.0.1:${port}`;
    if (port && (await redisAnswers(url))) return url;
  }
  const port = await freePort();
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'yes',
    '--appendonly', 'yes', '--save', '', '--pidfile', path.join(dir, 'redis.pid'),
    '--logfile', path.join(dir, 'redis.log'), '--hz', '50', ...extraArgs,
  ];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(bin, args, { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new RedisUnavailableError(`redis-server exited with ${code}`))));
  });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(url, 300)) {
      writeFileSync(portFile, String(port));
      return url;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new RedisUnavailableError(`redis-server started on port ${port} but does not answer; see ${dir}/redis.log`);
}

/**
 * Redis resolution, the same for every command: `url` (REDIS_URL or --redis-url) if given; else a Redis on
 * 127.0.0.1:6379; else a `redis-server` from PATH started by Sealpost with its data under `dataDir`;
 * else one clear error.
 */
export async function resolveRedis(opts: { url?: string; dataDir: string }): Promise<ResolvedRedis> {
  if (opts.url) {
    if (await redisAnswers(opts.url, 2000)) return { url: opts.url, source: 'env' };
    throw new RedisUnavailableError(`REDIS_URL ${redactUrl(opts.url)} does not answer PING`);
  }
  const local = 'redis://127.0.0.1:6379';
  if (await redisAnswers(local)) return { url: local, source: 'default' };
  return { url: await startOwnRedis(opts.dataDir), source: 'spawned' };
}

/** Hides a password in a Redis URL for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}
