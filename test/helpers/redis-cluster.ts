import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { redisAnswers } from '../../src/redis/resolve.ts';
import { freePort } from './redis-server.ts';

/** A local Redis Cluster a test owns: three masters, no replicas, each a Debian `redis-server`. */
export interface OwnCluster {
  /** `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3` */
  url: string;
  ports: number[];
  stop(): Promise<void>;
}

/**
 * Starts three `redis-server --cluster-enabled yes` on free ports (their cluster bus on port + 10000, so the
 * ports are picked below 55535), joins them with `redis-cli --cluster create`, and waits for
 * `cluster_state:ok`.
 */
export async function startOwnCluster(): Promise<OwnCluster> {
  // A node that could not bind (a port taken between the pick and the start) exits at once: start again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce();
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

/** True when `port` can be bound on 127.0.0.1 now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

async function startOnce(): Promise<OwnCluster> {
  // Each node also listens on its cluster bus port (port + 10000): that must be free too, and no node's bus
  // port may be another node's port (a node whose bus port is taken exits at start).
  const ports: number[] = [];
  while (ports.length < 3) {
    const p = await freePort();
    const taken = ports.flatMap((q) => [q, q + 10_000]);
    if (p < 55_000 && !taken.includes(p) && !taken.includes(p + 10_000) && (await bindable(p + 10_000))) ports.push(p);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'sealpost-cluster-'));
  const children: ChildProcess[] = ports.map((port) =>
    spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`,
      '--cluster-node-timeout', '2000', '--dir', dir, '--save', '', '--appendonly', 'no', '--hz', '100', '--logfile', path.join(dir, `redis-${port}.log`)], { stdio: 'ignore' }));
  const stop = async () => {
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => { c.once('exit', r); c.kill('SIGTERM'); }))));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const [i, port] of ports.entries()) {
      for (let n = 0; n < 100 && children[i]!.exitCode === null && !(await redisAnswers(`redis://127.0.0.1:${port}`, 200)); n++) await new Promise((r) => setTimeout(r, 50));
      if (!(await redisAnswers(`redis://127.0.0.1:${port}`, 200))) throw new Error(`cluster node on port ${port} did not start; see ${dir}`);
    }
    await promisify(execFile)('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    const url = `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`;
    for (let i = 0; i < 100 && !(await redisAnswers(url, 500)); i++) await new Promise((r) => setTimeout(r, 100));
    if (!(await redisAnswers(url, 1000))) throw new Error(`the cluster did not reach cluster_state:ok; see ${dir}`);
    return { url, ports, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
