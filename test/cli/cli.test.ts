import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { groupHelpers } from '../helpers/groups.ts';
import { sendTemplate, startSystem, type TestSystem } from '../helpers/system.ts';

const run = promisify(execFile);

/** Runs the CLI as a user would; never throws, returns the exit code and both streams. */
async function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('sealpost CLI', () => {
  let sys: TestSystem;
  let env: NodeJS.ProcessEnv;
  const dir = mkdtempSync(path.join(tmpdir(), 'sealpost-cli-'));

  beforeAll(async () => {
    sys = await startSystem();
    env = sys.childEnv();
  });
  afterAll(async () => sys?.close());

  it('business create checks the webhook subscription, then prints the business as one JSON object', async () => {
    const receiver = await startWebhookReceiver({ appSecret: 'cli-secret-1', verifyToken: 'tok' });
    try {
      const ok = await cli(['business', 'create', '--name', 'Cli Co', '--webhook-url', receiver.url, '--app-secret', 'cli-secret-1', '--verify-token', 'tok'], env);
      expect(ok.code).toBe(0);
      const created = JSON.parse(ok.stdout);
      expect(Object.keys(created).sort()).toEqual(['access_token', 'business_id', 'display_phone_number', 'phone_number_id', 'waba_id']);
      expect(await sys.ctx.businesses.authenticate(created.access_token)).toBe(created.business_id);
      const wrongToken = await cli(['business', 'create', '--name', 'X', '--webhook-url', receiver.url, '--app-secret', 'cli-secret-1', '--verify-token', 'nope'], env);
      expect(wrongToken.code).toBe(1);
      expect(wrongToken.stderr.trim().split('\n')).toHaveLength(1);
      expect(wrongToken.stderr).toMatch(/^sealpost: webhook subscription check failed: .*403/);
    } finally {
      await receiver.close();
    }
    // The Cloud API's no-storage mode: content kept at most 60 minutes, whatever the default retention.
    const noStore = await cli(['business', 'create', '--name', 'Ephemeral', '--webhook-url', 'http://127.0.0.1:9/none', '--app-secret', 'cli-secret-1', '--verify-token', 't', '--storage', 'none', '--no-verify'], env);
    expect(noStore.code).toBe(0);
    expect(await sys.ctx.businesses.info(JSON.parse(noStore.stdout).business_id)).toMatchObject({ storage: 'none', retention_ms: 3_600_000 });
    const badStorage = await cli(['business', 'create', '--name', 'X', '--webhook-url', 'http://127.0.0.1:9/x', '--app-secret', 'cli-secret-1', '--verify-token', 't', '--storage', 'cloud', '--no-verify'], env);
    expect(badStorage.code).toBe(1);
    const badUrl = await cli(['business', 'create', '--name', 'X', '--webhook-url', 'not a url', '--app-secret', 'cli-secret-1', '--verify-token', 't'], env);
    expect(badUrl).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: --webhook-url: not an http\(s\) URL/) });
    const missing = await cli(['business', 'create', '--name', 'X'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/required option/);
  });

  it('device create registers a device on the platform; a bad phone gets a one-line reason', async () => {
    const ok = await cli(['device', 'create', '--phone', '+15556660001'], env);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ wa_id: '15556660001' });
    const bad = await cli(['device', 'create', '--phone', 'call-me'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^sealpost: platform refused the device: /);
  });

  it('trace prints a conversation as JSON Lines; replay accepts it and rejects an altered step with a diff', async () => {
    const waId = await createDevice(sys.platformUrl, '+15556660002');
    const wamid = await sendTemplate(sys, waId, 'trace_me');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivery');
    const traced = await cli(['trace', wamid], env);
    expect(traced.code).toBe(0);
    const lines = traced.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ seq: 1, event: { type: 'SEND', wamid }, state: 'negotiating', input: expect.any(Object) });
    expect(lines.map((l) => l.event.type)).toEqual(expect.arrayContaining(['SEND', 'BUNDLE_FETCHED', 'ENCRYPTED', 'TRANSPORT_ACCEPTED', 'DELIVERED']));
    expect(traced.stdout).not.toContain('trace_me');
    expect(traced.stdout).not.toContain(waId);
    const file = path.join(dir, 'good.jsonl');
    writeFileSync(file, traced.stdout);
    const good = await cli(['replay', file], env);
    expect(good).toMatchObject({ code: 0, stdout: expect.stringMatching(/^replay ok: \d+ steps/) });
    const altered = lines.map((l) => (l.event.type === 'ENCRYPTED' ? { ...l, state: 'noSession' } : l));
    const badFile = path.join(dir, 'bad.jsonl');
    writeFileSync(badFile, altered.map((l) => JSON.stringify(l)).join('\n'));
    const bad = await cli(['replay', badFile], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('replay diverged at the first differing step');
    expect(bad.stdout).toMatch(/state\s+expected "noSession"\n\s+actual\s+"established"/);
    expect(readFileSync(badFile, 'utf8')).toContain('"ENCRYPTED"');
    const missing = await cli(['replay', path.join(dir, 'none.jsonl')], env);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: cannot read .*ENOENT/) });
  });

  it('trace prints a group actor\'s trace for a group id; replay runs it on the group machine', async () => {
    const g = groupHelpers(() => sys);
    const group = await g.create('traced group');
    const member = await createDevice(sys.platformUrl, '+15556660003');
    await g.join(member, group);
    const wamid = await g.sendToGroup(group.group_id, 'group trace me');
    await waitFor(() => g.statuses(wamid).some((x) => x.status === 'delivered'), 'the group message delivered', 20_000);
    const traced = await cli(['trace', group.group_id], env);
    expect(traced.code).toBe(0);
    const lines = traced.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ group_id: group.group_id, seq: 1, event: { type: 'MEMBERS' }, input: { groupId: group.group_id } });
    expect(traced.stdout).not.toContain('group trace me');
    expect(traced.stdout).not.toContain(member);
    const file = path.join(dir, 'group.jsonl');
    writeFileSync(file, traced.stdout);
    expect(await cli(['replay', file], env)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^replay ok: \d+ steps in 1 conversation\(s\) or group\(s\)/) });
    expect((await cli(['trace', 'G' + 'Z'.repeat(24)], env)).stderr).toMatch(/no trace for group/);
  });

  it('token create, list and revoke', async () => {
    const b = sys.business.business_id;
    const created = await cli(['token', 'create', '--business', b, '--expires-in', '1d'], env);
    expect(created.code).toBe(0);
    const { access_token, token_id, expires_at } = JSON.parse(created.stdout);
    expect(await sys.ctx.businesses.authenticate(access_token)).toBe(b);
    expect(expires_at).toBeGreaterThan(Date.now());
    const listed = await cli(['token', 'list', '--business', b], env);
    expect(listed.stdout).not.toContain(access_token);
    expect(JSON.parse(listed.stdout).tokens.map((t: { token_id: string }) => t.token_id)).toContain(token_id);
    expect((await cli(['token', 'revoke', '--business', b, '--token-id', token_id], env)).code).toBe(0);
    expect(await sys.ctx.businesses.authenticate(access_token)).toBeNull();
    const again = await cli(['token', 'revoke', '--business', b, '--token-id', 'ffffffffffffffff'], env);
    expect(again).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: business \d+ has no token ffffffffffffffff/) });
  });

  it('business, number and secret commands manage the Business Manager; bad input is one line', async () => {
    const b = sys.business.business_id;
    const listed = JSON.parse((await cli(['business', 'list'], env)).stdout);
    expect(listed.businesses.map((x: { business_id: string }) => x.business_id)).toContain(b);
    expect((await cli(['business', 'update', b, '--name', 'Renamed Co'], env)).code).toBe(0);
    expect(JSON.parse((await cli(['business', 'show', b], env)).stdout)).toMatchObject({ business_id: b, name: 'Renamed Co' });
    expect(await cli(['business', 'update', b, '--webhook-url', 'ftp://x'], env)).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: --webhook-url and --verify-token go together\n$/) });

    const added = await cli(['number', 'add', '--business', b, '--verified-name', 'Support'], env);
    expect(added.code).toBe(0);
    const pn = JSON.parse(added.stdout).phone_number_id as string;
    expect(JSON.parse((await cli(['number', 'list', '--business', b], env)).stdout).data.map((n: { phone_number_id: string }) => n.phone_number_id)).toContain(pn);
    expect((await cli(['number', 'set-webhook', '--business', b, pn, '--webhook-url', sys.receiver.url, '--verify-token', 'verify-me'], env)).code).toBe(0);
    expect(await sys.ctx.businesses.numberWebhookUrl(pn)).toBe(sys.receiver.url);
    expect((await cli(['number', 'remove', '--business', b, pn], env)).code).toBe(0);
    expect(await cli(['number', 'remove', '--business', b, sys.business.phone_number_id], env)).toMatchObject({ code: 1, stderr: 'sealpost: a business keeps at least one phone number\n' });

    // SEALPOST_WEBHOOK_DENY_PRIVATE=1: a URL reaching a private address is refused, even with --no-verify.
    const denyEnv = { ...env, SEALPOST_WEBHOOK_DENY_PRIVATE: '1' };
    const privateHook = await cli(['business', 'update', b, '--webhook-url', 'http://192.168.1.20/hook', '--verify-token', 't', '--no-verify'], denyEnv);
    expect(privateHook).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: --webhook-url refused: http:\/\/192\.168\.1\.20 is a loopback, private or link-local address.*\n$/) });
    expect(privateHook.stderr.trim().split('\n')).toHaveLength(1);
    const localCreate = await cli(['business', 'create', '--name', 'X', '--webhook-url', 'http://localhost:9/x', '--app-secret', 'cli-secret-1', '--verify-token', 't'], denyEnv);
    expect(localCreate).toMatchObject({ code: 1, stderr: expect.stringMatching(/^sealpost: --webhook-url refused: localhost resolves to/) });
    expect((await sys.ctx.businesses.webhookTarget(b, sys.business.phone_number_id))!.url).toBe(sys.receiver.url);

    const rotated = await cli(['secret', 'rotate', '--business', b], env);
    expect(JSON.parse(rotated.stdout).app_secret).toMatch(/^[0-9a-f]{48}$/);
    expect((await sys.ctx.businesses.webhookTarget(b, sys.business.phone_number_id))!.appSecret).toBe(JSON.parse(rotated.stdout).app_secret);
    // Put the suite's secret back (the receiver checks signatures with it).
    expect((await cli(['secret', 'rotate', '--business', b, '--app-secret', sys.appSecret], env)).stdout.trim()).toBe('{"success":true}');
  }, 90_000);

  it('keys rotate-data adds a version of a business data key; an unknown business gets a one-line reason', async () => {
    const b = sys.business.business_id;
    const started = Date.now();
    const ok = await cli(['keys', 'rotate-data', '--business', b], env);
    expect(ok.code).toBe(0);
    const rotated = JSON.parse(ok.stdout);
    expect(rotated).toEqual({ business_id: b, version: 2, active_at: expect.any(Number) });
    // It starts sealing once every process has read it (the re-check period and a margin).
    expect(rotated.active_at).toBeGreaterThanOrEqual(started + 40_000);
    expect(await sys.ctx.redis.hget(sys.ctx.keys.dataKey(b), 'cur')).toBe('2');
    expect((await sys.ctx.dataKeys.rotate(b, 60_000)).version).toBe(3);
    const unknown = await cli(['keys', 'rotate-data', '--business', '999999999999999'], env);
    expect(unknown).toMatchObject({ code: 1, stderr: 'sealpost: no business 999999999999999\n' });
    expect((await cli(['keys', 'rotate-data'], env)).stderr).toMatch(/required option '--business <id>'/);
  });

  it('a bad setting is one line naming it', async () => {
    const res = await cli(['device', 'create', '--phone', '+15556660003'], { ...env, SEALPOST_RETENTION: '45d' });
    expect(res.code).toBe(1);
    expect(res.stderr).toBe('sealpost: invalid configuration: retentionMs: SEALPOST_RETENTION is at most 30d\n');
  });
});
