import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { testRedisUrl } from '../helpers/redis.ts';

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
    expect(r.msgs_per_s).toBeGreaterThan(0);
    expect(r.p99_ms).toBeGreaterThanOrEqual(r.p50_ms!);
    expect(r.ratio_to_crypto_ceiling).toBeCloseTo(r.msgs_per_s! / r.crypto_ceiling_msgs_per_s!, 1);
  }, 150_000);
});
