import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSystem, type TestSystem } from '../helpers/system.ts';

/** Starts a worker-only process serving /metrics on a port of its own; resolves with its URL. */
function startWorker(env: NodeJS.ProcessEnv, children: ChildProcess[]): Promise<string> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      const m = /metrics on (http:\/\/\S+)\/metrics/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before serving metrics: ${out}`)));
  });
}

/** A worker-only process's /metrics: behind the admin token, refusals in the Graph error envelope. */
describe('a worker process with SEALPOST_METRICS_PORT', () => {
  let sys: TestSystem;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    sys = await startSystem({ workers: false });
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    await sys?.close();
  });

  it('answers 401 with the Graph envelope to a missing or wrong token, and the series to the admin token', async () => {
    const url = await startWorker({ ...sys.childEnv(), SEALPOST_METRICS_PORT: '0' }, children);
    for (const headers of [{}, { authorization: 'Bearer not-the-admin-token-at-all' }] as Record<string, string>[]) {
      const res = await fetch(`${url}/metrics`, { headers });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: number } }).error.code).toBe(190);
    }
    const ok = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('sealpost_shard_job_drains_bucket');
  }, 60_000);

  it('says the admin API is disabled (401, not 500) when no admin token is configured', async () => {
    const env: NodeJS.ProcessEnv = { ...sys.childEnv(), SEALPOST_METRICS_PORT: '0' };
    delete env.SEALPOST_ADMIN_TOKEN;
    const url = await startWorker(env, children);
    const res = await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer anything-at-all-here' } });
    expect(res.status).toBe(401);
    expect(JSON.stringify(await res.json())).toContain('SEALPOST_ADMIN_TOKEN');
  }, 60_000);
});
