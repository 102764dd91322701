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
      await waitFor(() => out.includes('then her linked laptop:'), 'the demo instructions', 60_000);
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
      // Ada's linked laptop shows it too (its own session: the message was encrypted for each device).
      const laptopUrl = /^ {2}curl -s '(http\S+\/messages\?device=\d+)'$/m.exec(out)![1]!;
      await waitFor(async () => ((await (await fetch(laptopUrl)).json()) as { messages: unknown[] }).messages.length === 1, 'the laptop to show the text');
      expect(((await (await fetch(laptopUrl)).json()) as { messages: { id: string; text: { body: string } }[] }).messages[0]).toMatchObject({ id: wamid, text: { body: 'Hello from Sealpost' } });
      await waitFor(() => out.includes(`webhook status delivered ${wamid}`), 'the receiver to print delivered');
      expect(out).toContain(`webhook status sent ${wamid}`);

      // Where an operator looks: each printed address answers, the admin ones with the printed admin token.
      await waitFor(() => out.includes('OTEL_EXPORTER_OTLP_PROTOCOL'), 'the operator addresses', 30_000);
      const admin = { authorization: `Bearer ${/admin token\s+(\S+)/.exec(out)![1]!}` };
      const at = (label: string) => new RegExp(`^ {2}${label} +(http\\S+)`, 'm').exec(out)?.[1] ?? `(no ${label} line)`;
      const board = await fetch(at('queue board'), { headers: admin });
      expect(board.status).toBe(200);
      expect(await board.text()).toMatch(/<html/i);
      const inspectorUrl = at('conversation');
      expect(inspectorUrl).toMatch(/\/admin\/conversations\/[0-9a-f]{30}$/);
      const conversation = await fetch(inspectorUrl, { headers: { ...admin, accept: 'application/json' } });
      expect(conversation.status).toBe(200);
      expect(((await conversation.json()) as { conversation_id: string }).conversation_id).toBe(inspectorUrl.split('/').pop());
      const metrics = await fetch(at('metrics'), { headers: admin });
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toContain('# TYPE');
      const docs = await fetch(at('API reference'));
      expect(docs.status).toBe(200);
      expect(await docs.text()).toContain('swagger-ui');
      const document = await fetch(/OpenAPI document: (http\S+openapi\.json)/.exec(out)![1]!);
      expect(((await document.json()) as { openapi: string }).openapi).toBe('3.1.0');
      expect(out).toMatch(/^ {2}tracing +off; set OTEL_EXPORTER_OTLP_ENDPOINT \(e\.g\. http:\/\/localhost:4318\)/m);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 120_000);
});
