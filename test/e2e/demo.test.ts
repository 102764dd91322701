import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/devices.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

describe('npm start (serve --demo)', () => {
  const prefix = testPrefix('demo');
  afterAll(async () => deletePrefix(testRedisUrl(), prefix));

  it('prints a token, a phone_number_id and a curl that delivers a text, and the receiver prints sent and delivered', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'sealpost-demo-'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--demo'], {
      env: { ...process.env, REDIS_URL: testRedisUrl(), SEALPOST_PREFIX: prefix, SEALPOST_DATA_DIR: dataDir, PORT: '0', PLATFORM_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += String(d)));
    child.stderr!.on('data', (d) => (out += String(d)));
    try {
      await waitFor(() => out.includes('See what the device received'), 'the demo instructions', 60_000);
      expect(out).toContain(`generated a master key in ${dataDir}/master.key`);
      expect(out).not.toMatch(/^\{"level"/m); // a person reads this screen: no JSON log lines at the default level
      const token = /access_token\s+(\S+)/.exec(out)![1]!;
      const pnid = /phone_number_id\s+(\d+)/.exec(out)![1]!;
      // Run the printed curl as printed (the shell joins the continued lines).
      const curl = /^ {2}(curl -s -X POST[\s\S]*?)\nSee what/m.exec(out)![1]!.replace(/\\\n\s*/g, ' ');
      expect(curl).toContain(`/v23.0/${pnid}/messages`);
      expect(curl).toContain(`Bearer ${token}`);
      const res = await new Promise<string>((resolve, reject) => {
        const sh = spawn('sh', ['-c', curl]);
        let body = '';
        sh.stdout.on('data', (d) => (body += String(d)));
        sh.on('exit', (code) => (code === 0 ? resolve(body) : reject(new Error(`curl exited ${code}`))));
      });
      const wamid = JSON.parse(res).messages[0].id as string;
      const deviceUrl = /^ {2}curl -s (http\S+\/messages)$/m.exec(out)![1]!;
      await waitFor(async () => ((await (await fetch(deviceUrl)).json()) as { messages: unknown[] }).messages.length === 1, 'the device to show the text');
      expect(((await (await fetch(deviceUrl)).json()) as { messages: { id: string; text: { body: string } }[] }).messages[0]).toMatchObject({ id: wamid, text: { body: 'Hello from Sealpost' } });
      await waitFor(() => out.includes(`webhook status delivered ${wamid}`), 'the receiver to print delivered');
      expect(out).toContain(`webhook status sent ${wamid}`);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 120_000);
});
