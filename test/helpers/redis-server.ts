import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { redisAnswers } from '../../src/redis/resolve.ts';

/** A private redis-server a test owns (so it may crash or restart it), with AOF on. */
export interface OwnRedis {
  url: string;
  port: number;
  dir: string;
  /** Stops it (SHUTDOWN semantics: AOF flushed) and starts it again on the same port and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts a redis-server with appendonly (fsync always) and hz 100 (timers fire within ~10 ms). */
export async function startOwnRedisServer(): Promise<OwnRedis> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'sealpost-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess;
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes',
      '--appendfsync', 'always', '--save', '', '--hz', '100', '--logfile', path.join(dir, 'redis.log')], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !(await redisAnswers(url, 200)); i++) await new Promise((r) => setTimeout(r, 50));
    if (!(await redisAnswers(url))) throw new Error(`redis-server on ${port} did not start; see ${dir}/redis.log`);
  };
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM'); // redis-server shuts down cleanly on SIGTERM, flushing the AOF
    await exited;
  };
  await start();
  return { url, port, dir, restart: async () => { await stop(); await start(); }, stop };
}
