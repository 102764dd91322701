import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { testRedisUrl } from '../helpers/redis.ts';
import { medianOf } from '../../bench/report.ts';
import type { BenchResult } from '../../bench/bench.ts';

describe('sealpost bench', () => {
  it('runs end to end on a small load and prints the contract fields as one JSON object', async () => {
    const { stdout } = await promisify(execFile)(process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'bench', '--messages', '40', '--conversations', '4', '--workers', '0', '--json'],
      { env: { ...process.env, REDIS_URL: testRedisUrl() }, timeout: 120_000 });
    const r = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number>;
    for (const f of ['msgs_per_s', 'p50_ms', 'p99_ms', 'crypto_ceiling_msgs_per_s', 'bullmq_noop_jobs_per_s', 'ratio_to_crypto_ceiling',
      'conversations', 'messages', 'workers', 'redis_bytes_per_conversation']) {
      expect(typeof r[f], f).toBe('number');
    }
    expect(r).toMatchObject({ messages: 40, conversations: 4, workers: 0 });
    // One device per user (the default): each message is one device envelope, counted on the phones.
    expect(r).toMatchObject({ devices_per_user: 1, envelopes_per_s: r.msgs_per_s, router_cpu_ms_per_envelope: r.router_cpu_ms_per_message });
    expect(r.msgs_per_s).toBeGreaterThan(0);
    expect(r.p99_ms).toBeGreaterThanOrEqual(r.p50_ms!);
    expect(r.ratio_to_crypto_ceiling).toBeCloseTo(r.msgs_per_s! / r.crypto_ceiling_msgs_per_s!, 1);
    // The platform runs in a process of its own, whose CPU is counted apart from the router's.
    expect(r.platform_cpu_ms_per_message).toBeGreaterThan(0);
    expect(r.total_cpu_ms_per_message).toBeGreaterThan(r.cpu_ms_per_message! + r.platform_cpu_ms_per_message!);
    // So does the API: its CPU per accepted message is its own field, and part of the total.
    expect(r.api_cpu_ms_per_message).toBeGreaterThan(0);
    expect(r.total_cpu_ms_per_message).toBeGreaterThan(r.cpu_ms_per_message! + r.platform_cpu_ms_per_message! + r.api_cpu_ms_per_message!);
    // The latency phase's own cost: what its messages took in Redis commands (an accept, a commit and more
    // each) and CPU (no worker processes here: the router's share is Redis's).
    expect(r.paced_redis_commands_per_message).toBeGreaterThan(5);
    expect(r.paced_worker_cpu_ms_per_message).toBe(0);
    expect(r.paced_router_cpu_ms_per_message).toBeGreaterThanOrEqual(0);
    const q = (r as unknown as { latency_quantiles_ms: Record<string, number> }).latency_quantiles_ms;
    expect(q.p50).toBe(r.p50_ms);
    expect(q.p100).toBeGreaterThanOrEqual(q.p99!);
  }, 150_000);

  it('reaches more users than a new number may (250 a day): the bench number sends as an established one', async () => {
    // Every first contact is a business-initiated conversation; on a new number's tier the 251st fails (131048).
    const { stdout, stderr } = await promisify(execFile)(process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'bench', '--messages', '300', '--conversations', '300', '--workers', '0', '--json'],
      { env: { ...process.env, REDIS_URL: testRedisUrl() }, timeout: 240_000 });
    const r = JSON.parse(stdout.trim().split('\n').at(-1)!) as { conversations: number; first_contact_per_s: number; redis_commands_by_name: Record<string, number> };
    expect(r.conversations).toBe(300);
    expect(r.first_contact_per_s).toBeGreaterThan(0);
    // Where the Redis calls go, per message, most first (scripts' inner commands included).
    expect(r.redis_commands_by_name.evalsha).toBeGreaterThan(0);
    const counts = Object.values(r.redis_commands_by_name);
    expect(counts).toEqual([...counts].sort((a, b) => b - a));
    // Progress goes to stderr, stdout holds only the JSON.
    expect(stderr).toContain('first contact with 300 users');
    expect(stdout.trim().split('\n')).toHaveLength(1);
  }, 250_000);

  it('--devices-per-user takes 1 to 5; anything else is one line on stderr and exit code 1 (as the bench\'s other checks), before any work', async () => {
    for (const bad of ['0', '6', 'two', '2.5', '']) {
      const e = await promisify(execFile)(process.execPath,
        ['--import', 'tsx', 'src/cli.ts', 'bench', '--messages', '10', '--conversations', '2', '--devices-per-user', bad, '--json'],
        { env: { ...process.env, REDIS_URL: 'redis://127.0.0.1:1' }, timeout: 60_000 }).then(() => null, (err: { code: number; stdout: string; stderr: string }) => err);
      expect(e, `--devices-per-user ${JSON.stringify(bad)}`).not.toBeNull();
      expect(e!.code).toBe(1);
      expect(e!.stdout).toBe('');
      expect(e!.stderr.trim().split('\n')).toEqual([expect.stringContaining('sealpost: --devices-per-user must be an integer from 1 to 5')]);
    }
  }, 120_000);

  it('--devices-per-user 2 links a companion to every user, and every message reaches both devices', async () => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'bench', '--messages', '30', '--conversations', '3', '--workers', '1', '--devices-per-user', '2', '--json'],
      { env: { ...process.env, REDIS_URL: testRedisUrl() }, timeout: 120_000 });
    const r = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number>;
    expect(r).toMatchObject({ devices_per_user: 2, messages: 30, conversations: 3 });
    expect(stderr).toContain('linking 1 companion(s) to each of 3 users');
    // The phase waited for both devices of every user: twice the envelopes of the messages, over the same time
    // (each rounded on its own), and the router's CPU shared over them.
    expect(Math.abs(r.envelopes_per_s! - 2 * r.msgs_per_s!)).toBeLessThanOrEqual(1);
    expect(r.router_cpu_ms_per_envelope).toBeCloseTo(r.router_cpu_ms_per_message! / 2, 2);
  }, 150_000);

  it('takes the median of each field over runs, per key for breakdowns', () => {
    const run = (n: number, sess: number) => ({ msgs_per_s: n, p50_ms: n / 10, redis_bytes_by_kind: { sess } }) as unknown as BenchResult;
    expect(medianOf([run(300, 5), run(100, 9), run(200, 7)])).toMatchObject({ msgs_per_s: 200, p50_ms: 20, redis_bytes_by_kind: { sess: 7 } });
    expect(medianOf([run(100, 1), run(200, 2)])).toMatchObject({ msgs_per_s: 150 });
  });

  it('--matrix runs each worker count --runs times and writes the table of medians with the command', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'sealpost-bench-')), 'results.md');
    const { stdout } = await promisify(execFile)(process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'bench', '--messages', '20', '--conversations', '2', '--runs', '2', '--matrix', '0,1', '--out', out, '--json'],
      { env: { ...process.env, REDIS_URL: testRedisUrl() }, timeout: 240_000 });
    const r = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number>;
    expect(r).toMatchObject({ runs: 2, workers: 0, messages: 20 });
    const md = readFileSync(out, 'utf8');
    expect(md).toContain('--runs 2 --matrix 0,1');
    expect(md).toMatch(/\| field \| 0 workers \| 1 worker \|/);
    // Each cell: the median in bold, then both runs.
    // Worker memory: none of its own with in-process workers, the worker process's RSS with one.
    expect(md).toMatch(/\| `worker_rss_mb` \| \*\*0\*\* \(0 \/ 0\) \| \*\*[1-9][\d.]*\*\* /);
    expect(md).toMatch(/\| `msgs_per_s` \| \*\*[\d.]+\*\* \([\d.]+ \/ [\d.]+\) \| \*\*[\d.]+\*\* \([\d.]+ \/ [\d.]+\) \|/);
    // The charts beside the table, linked from it: a latency line per worker count and load, a bar per worker count.
    expect(md).toContain('![latency distribution](results-latency.svg)');
    expect(md).toContain('![throughput and CPU per message](results-scaling.svg)');
    const latency = readFileSync(out.replace(/\.md$/, '-latency.svg'), 'utf8');
    expect(latency).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(latency.match(/<path d="M/g)).toHaveLength(4);
    expect(latency).toContain('1 worker, saturated');
    const scaling = readFileSync(out.replace(/\.md$/, '-scaling.svg'), 'utf8');
    expect(scaling).toContain('messages per second');
    expect(scaling).toContain('>API<');
  }, 300_000);
});
