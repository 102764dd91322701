import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { redisAnswers, RedisUnavailableError, resolveRedis, startOwnRedis } from '../../src/redis/resolve.ts';

describe('Redis resolution', () => {
  it('uses REDIS_URL when it answers, and fails with one clear error when it does not', async () => {
    const ok = await resolveRedis({ url: 'redis://127.0.0.1:6379', dataDir: '.data/unused' });
    expect(ok.source).toBe('env');
    await expect(resolveRedis({ url: 'redis://127.0.0.1:1', dataDir: '.data/unused' })).rejects.toThrow(RedisUnavailableError);
    await expect(resolveRedis({ url: 'redis://user:hunter2@127.0.0.1:1', dataDir: '.data/unused' })).rejects.toThrow(/redis:\/\/\*\*\*@127\.0\.0\.1:1 does not answer/);
  });

  it('starts its own redis-server with data under the data folder, and reuses it on the next call', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'sealpost-redis-'));
    const url = await startOwnRedis(dir);
    try {
      expect(await redisAnswers(url)).toBe(true);
      expect(await startOwnRedis(dir)).toBe(url);
    } finally {
      const pid = Number(readFileSync(path.join(dir, 'redis', 'redis.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
    }
  });

  it('says how to install Redis when none answers and redis-server is not on PATH', async () => {
    const script = `
      import { startOwnRedis } from './src/redis/resolve.ts';
      try { await startOwnRedis('${mkdtempSync(path.join(tmpdir(), 'sealpost-nored-'))}'); } catch (e) { console.log(e.message); }`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, PATH: '/nonexistent' } }).toString();
    expect(out).toMatch(/redis-server is not on PATH: install Redis 6\.2\+ \(Debian\/Ubuntu: `apt-get install redis-server`/);
  });
});
