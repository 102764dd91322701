#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { conversationOfWamid, isConversationId } from './runtime/ids.ts';
import { parseTrace, replayTrace, TraceFormatError } from './trace/replay.ts';
import { ConfigError, loadConfig, loadMasterKey, parseDuration, platformUrlOf, type Config, type ConfigOverrides } from './config.ts';
import { configureLogging } from './log.ts';
import { redactUrl, RedisUnavailableError, resolveRedis } from './redis/resolve.ts';
import { serve } from './serve.ts';
import { readTraceLines } from './trace/store.ts';
import { createRouterContext } from './runtime/router.ts';
import { verifySubscription } from './webhook/subscription.ts';
import { webhookUrlProblem } from './webhook/egress.ts';

/** A CLI failure: printed as one line, exit code 1. */
class CliError extends Error {}

interface CommonOpts extends ConfigOverrides {
  port?: string;
}

function common(cmd: Command): Command {
  return cmd
    .option('--redis-url <url>', 'Redis to use (default: REDIS_URL, else 127.0.0.1:6379, else one Sealpost starts)')
    .option('--platform-url <url>', 'the transport/platform server (default: PLATFORM_URL or http://127.0.0.1:8081)')
    .option('--api-url <url>', 'the Sealpost API (default: SEALPOST_API_URL or http://127.0.0.1:8080)');
}

/** Loads the configuration; logs default to `info`, or `warn` where a person reads the screen (the demo). */
function config(opts: CommonOpts, quietByDefault = false): Config {
  const c = loadConfig(process.env, opts);
  configureLogging({ level: c.logLevel ?? (quietByDefault ? 'warn' : 'info') });
  return c;
}

async function redisFor(c: Config): Promise<string> {
  const r = await resolveRedis({ url: c.redisUrl, dataDir: c.dataDir });
  if (r.source === 'spawned') process.stderr.write(`sealpost: started redis-server at ${redactUrl(r.url)} (data in ${c.dataDir}/redis)\n`);
  return r.url;
}

async function postJson(url: string, body: unknown): Promise<{ status: number; json: any }> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  } catch (e) {
    throw new CliError(`cannot reach ${new URL(url).origin}: ${(e as Error).cause ? String((e as Error & { cause: Error }).cause.message) : (e as Error).message}`);
  }
  const text = await res.text();
  try {
    return { status: res.status, json: text ? JSON.parse(text) : null };
  } catch {
    return { status: res.status, json: { error: text.slice(0, 200) } };
  }
}

const program = new Command('sealpost')
  .description('Self-hosted router for end-to-end encrypted business messaging')
  .showHelpAfterError()
  .configureOutput({ outputError: (s, write) => write(s) });

common(program.command('serve'))
  .description('API + workers + embedded platform (unless --platform-url); --demo provisions a demo business and devices')
  .option('--demo', 'provision a demo business, a webhook receiver that prints statuses, and three demo devices')
  .option('--port <port>', 'API port (default: PORT or 8080)')
  .action(async (opts: CommonOpts & { demo?: boolean }) => {
    const c = config(opts, !!opts.demo);
    await serve(c, await redisFor(c), { roles: ['api', 'worker'], embedPlatform: !opts.platformUrl, demo: !!opts.demo });
  });

common(program.command('api'))
  .description('only the HTTP API')
  .option('--port <port>', 'API port (default: PORT or 8080)')
  .action(async (opts: CommonOpts) => {
    const c = config(opts);
    await serve(c, await redisFor(c), { roles: ['api'], embedPlatform: false, demo: false });
  });

common(program.command('worker'))
  .description('only the workers (conversation actors, timers, webhooks, transport events)')
  .action(async (opts: CommonOpts) => {
    const c = config(opts);
    await serve(c, await redisFor(c), { roles: ['worker'], embedPlatform: false, demo: false });
  });

common(program.command('platform'))
  .description('only the simulated transport and user devices (port PLATFORM_PORT or 8081)')
  .option('--port <port>', 'platform port (default: PLATFORM_PORT or 8081)')
  .action(async (opts: CommonOpts) => {
    const c = config({ ...opts, port: undefined });
    const { startPlatform } = await import('./platform/server.ts');
    const p = await startPlatform({ host: c.host, port: opts.port ? Number(opts.port) : c.platformPort });
    process.stdout.write(`platform listening on ${p.url}\n`);
    const stop = async () => { await p.close(); process.exit(0); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

const business = program.command('business').description('manage businesses');
common(business.command('create'))
  .description('provision a business with one phone number; prints JSON')
  .requiredOption('--name <name>', 'business name (also the verified name)')
  .requiredOption('--webhook-url <url>', 'where webhooks go')
  .requiredOption('--app-secret <secret>', 'app secret that signs webhooks (X-Hub-Signature-256)')
  .requiredOption('--verify-token <token>', 'verify token for the subscription check')
  .option('--region <region>', 'region to keep data in')
  .option('--retention <duration>', 'how long messages are kept (e.g. 30d, 10m); default SEALPOST_RETENTION')
  .addOption(new Option('--storage <mode>', "'none': the Cloud API's no-storage mode (content kept at most 60 minutes)").choices(['default', 'none']).default('default'))
  .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
  .action(async (opts: CommonOpts & { name: string; webhookUrl: string; appSecret: string; verifyToken: string; region?: string; retention?: string; storage: 'default' | 'none'; verify: boolean }) => {
    const c = config(opts, true);
    let url: URL;
    try {
      url = new URL(opts.webhookUrl);
      if (!['http:', 'https:'].includes(url.protocol)) throw new Error();
    } catch {
      throw new CliError(`--webhook-url: not an http(s) URL: ${opts.webhookUrl}`);
    }
    let retentionMs: number | undefined;
    if (opts.retention) {
      retentionMs = loadConfig({ SEALPOST_RETENTION: opts.retention }).retentionMs;
    }
    if (!opts.name.trim()) throw new CliError('--name must not be empty');
    if (opts.region && !(opts.region in c.regions)) {
      throw new CliError(`--region ${opts.region} is not configured (SEALPOST_REGIONS has: ${Object.keys(c.regions).join(', ') || 'none'})`);
    }
    if (opts.appSecret.length < 8) throw new CliError('--app-secret must be at least 8 characters');
    await subscriptionChecked(url.toString(), opts.verifyToken, opts.verify, c.webhookDenyPrivate);
    const ctx = createRouterContext(c, await redisFor(c), loadMasterKey(c).keys);
    try {
      const created = await ctx.businesses.create({
        name: opts.name, webhookUrl: url.toString(), appSecret: opts.appSecret, verifyToken: opts.verifyToken,
        ...(opts.region ? { region: opts.region } : {}), ...(retentionMs ? { retentionMs } : {}), storage: opts.storage,
      });
      // Users can write first only once the number's bundle is in the directory; the workers retry if not.
      await ctx.publisher.ensure(created.phone_number_id);
      process.stdout.write(JSON.stringify(created) + '\n');
    } finally {
      await ctx.close();
    }
  });

const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');

/** An http(s) URL from an option, or a one-line reason. */
function urlOption(v: string, flag: string): string {
  try {
    const u = new URL(v);
    if (u.protocol === 'http:' || u.protocol === 'https:') return u.toString();
  } catch { /* below */ }
  throw new CliError(`${flag}: not an http(s) URL: ${v}`);
}

/** Where a webhook URL leads (SEALPOST_WEBHOOK_DENY_PRIVATE), then, unless --no-verify, the subscription check. */
async function subscriptionChecked(url: string, verifyToken: string, verify: boolean, denyPrivate: boolean): Promise<void> {
  const problem = await webhookUrlProblem(url, denyPrivate);
  if (problem) throw new CliError(`--webhook-url refused: ${problem}`);
  if (!verify) return;
  const check = await verifySubscription(url, verifyToken, { timeoutMs: 10_000, denyPrivate });
  if (!check.ok) throw new CliError(`webhook subscription check failed: ${check.reason}`);
}

common(business.command('list'))
  .description('lists the businesses (no secrets); prints JSON')
  .action(async (opts: CommonOpts) => {
    await withContext(opts, async (ctx) => out({ businesses: await ctx.businesses.list() }));
  });
common(business.command('show'))
  .description("a business's settings and phone numbers (no secrets); prints JSON")
  .argument('<business_id>')
  .action(async (id: string, opts: CommonOpts) => {
    await withContext(opts, async (ctx) => {
      await knownBusiness(ctx, id);
      out({ ...(await ctx.businesses.info(id)), phone_numbers: await ctx.businesses.numbersOf(id) });
    });
  });
common(business.command('update'))
  .description("changes a business's name, retention, or webhook URL and verify token (checked first)")
  .argument('<business_id>')
  .option('--name <name>')
  .option('--retention <duration>', 'e.g. 30d, 10m (at most 30d)')
  .option('--webhook-url <url>')
  .option('--verify-token <token>')
  .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
  .action(async (id: string, opts: CommonOpts & { name?: string; retention?: string; webhookUrl?: string; verifyToken?: string; verify: boolean }) => {
    const patch: { name?: string; retentionMs?: number; webhookUrl?: string; verifyToken?: string } = {};
    if (opts.name !== undefined) {
      if (!opts.name.trim()) throw new CliError('--name must not be empty');
      patch.name = opts.name;
    }
    if (opts.retention !== undefined) patch.retentionMs = loadConfig({ SEALPOST_RETENTION: opts.retention }).retentionMs;
    if ((opts.webhookUrl === undefined) !== (opts.verifyToken === undefined)) throw new CliError('--webhook-url and --verify-token go together');
    if (opts.webhookUrl !== undefined) {
      patch.webhookUrl = urlOption(opts.webhookUrl, '--webhook-url');
      patch.verifyToken = opts.verifyToken!;
      await subscriptionChecked(patch.webhookUrl, patch.verifyToken, opts.verify, config(opts, true).webhookDenyPrivate);
    }
    if (!Object.keys(patch).length) throw new CliError('nothing to change: give --name, --retention or --webhook-url with --verify-token');
    await withContext(opts, async (ctx) => {
      await knownBusiness(ctx, id);
      await ctx.businesses.update(id, patch);
      out({ success: true });
    });
  });
common(business.command('delete'))
  .description('deletes a business: its tokens, numbers and data key (what it still has in Redis can no longer be read)')
  .argument('<business_id>')
  .action(async (id: string, opts: CommonOpts) => {
    await withContext(opts, async (ctx) => {
      await knownBusiness(ctx, id);
      out({ success: await ctx.businesses.delete(id) });
    });
  });

const number = program.command('number').description("a business's phone numbers");
common(number.command('add'))
  .description('adds a phone number (its own Signal identity, published to the transport); prints JSON')
  .requiredOption('--business <id>', 'business_id')
  .option('--verified-name <name>', 'the name users see (default: the business name)')
  .action(async (opts: CommonOpts & { business: string; verifiedName?: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const added = await ctx.businesses.addNumber(id, opts.verifiedName ? { verifiedName: opts.verifiedName } : {});
      await ctx.publisher.ensure(added.phone_number_id);
      out(added);
    });
  });
common(number.command('list'))
  .description("a business's phone numbers; prints JSON")
  .requiredOption('--business <id>', 'business_id')
  .action(async (opts: CommonOpts & { business: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const data = [];
      for (const pn of await ctx.businesses.numbersOf(id)) {
        const n = await ctx.businesses.phoneNumber(pn);
        if (n) data.push({ phone_number_id: pn, display_phone_number: n.display_phone_number, verified_name: n.verified_name, quality_rating: n.quality_rating, webhook_url: await ctx.businesses.numberWebhookUrl(pn) });
      }
      out({ business_id: id, data });
    });
  });
common(number.command('remove'))
  .description('removes a phone number (a business keeps at least one)')
  .requiredOption('--business <id>', 'business_id')
  .argument('<phone_number_id>')
  .action(async (pn: string, opts: CommonOpts & { business: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      let removed: boolean;
      try {
        removed = await ctx.businesses.removeNumber(id, pn);
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      if (!removed) throw new CliError(`business ${id} has no phone number ${pn}`);
      out({ success: true });
    });
  });
common(number.command('set-webhook'))
  .description("gives a number its own webhook URL (checked first), or --clear to use its business's again")
  .requiredOption('--business <id>', 'business_id')
  .argument('<phone_number_id>')
  .option('--webhook-url <url>')
  .option('--verify-token <token>')
  .option('--clear', "use the business's webhook again")
  .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
  .action(async (pn: string, opts: CommonOpts & { business: string; webhookUrl?: string; verifyToken?: string; clear?: boolean; verify: boolean }) => {
    if (!opts.clear && (!opts.webhookUrl || !opts.verifyToken)) throw new CliError('give --webhook-url and --verify-token, or --clear');
    const url = opts.clear ? null : urlOption(opts.webhookUrl!, '--webhook-url');
    if (url) await subscriptionChecked(url, opts.verifyToken!, opts.verify, config(opts, true).webhookDenyPrivate);
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      if (!(await ctx.businesses.numbersOf(id)).includes(pn)) throw new CliError(`business ${id} has no phone number ${pn}`);
      await ctx.businesses.setNumberWebhook(pn, url ? { url, verifyToken: opts.verifyToken! } : null);
      out({ success: true });
    });
  });

const secret = program.command('secret').description("a business's app secret (signs its webhooks)");
common(secret.command('rotate'))
  .description('replaces the app secret; without --app-secret one is generated and printed once')
  .requiredOption('--business <id>', 'business_id')
  .option('--app-secret <secret>', 'the new secret (at least 8 characters)')
  .action(async (opts: CommonOpts & { business: string; appSecret?: string }) => {
    if (opts.appSecret !== undefined && opts.appSecret.length < 8) throw new CliError('--app-secret must be at least 8 characters');
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const value = opts.appSecret ?? randomBytes(24).toString('hex');
      await ctx.businesses.rotateAppSecret(id, value);
      out(opts.appSecret ? { success: true } : { success: true, app_secret: value });
    });
  });

const device = program.command('device').description('simulated user devices on the platform');
common(device.command('create'))
  .description('register a simulated device (fresh identity and prekeys); prints JSON with wa_id')
  .requiredOption('--phone <e164>', 'the user\'s phone number, E.164 (e.g. +15551234567)')
  .action(async (opts: CommonOpts & { phone: string }) => {
    const c = config(opts);
    const { status, json } = await postJson(`${platformUrlOf(c)}/sim/devices`, { phone: opts.phone });
    if (status !== 200 && status !== 201) throw new CliError(`platform refused the device: ${json?.error ?? `HTTP ${status}`}`);
    process.stdout.write(JSON.stringify(json) + '\n');
  });

/** Runs `fn` with a router context (Redis resolved, master key loaded), closing it afterwards. */
async function withContext<T>(opts: CommonOpts, fn: (ctx: ReturnType<typeof createRouterContext>) => Promise<T>): Promise<T> {
  const c = config(opts, true);
  const ctx = createRouterContext(c, await redisFor(c), loadMasterKey(c).keys);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

async function knownBusiness(ctx: ReturnType<typeof createRouterContext>, id: string): Promise<string> {
  if (!(await ctx.businesses.info(id))) throw new CliError(`no business ${id}`);
  return id;
}

common(program.command('stats'))
  .description("a business's daily aggregates (accepted, sent, delivered, read, failed by code, inbound); no user data")
  .requiredOption('--business <id>', 'business_id')
  .option('--from <day>', 'first day, YYYY-MM-DD (default: 6 days before --to)')
  .option('--to <day>', 'last day, YYYY-MM-DD (default: today, UTC)')
  .action(async (opts: CommonOpts & { business: string; from?: string; to?: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const to = opts.to ?? new Date().toISOString().slice(0, 10);
      const from = opts.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 6 * 86_400_000).toISOString().slice(0, 10);
      if (!/^\d{4}-\d{2}-\d{2}$/.test(from) || !/^\d{4}-\d{2}-\d{2}$/.test(to) || from > to) throw new CliError('--from and --to must be days (YYYY-MM-DD), from <= to');
      process.stdout.write(JSON.stringify({ business_id: id, days: await ctx.stats.days(id, from, to) }) + '\n');
    });
  });

common(program.command('billing'))
  .description("a business's billable messages by category for a month")
  .requiredOption('--business <id>', 'business_id')
  .option('--month <month>', 'YYYY-MM (default: this month, UTC)')
  .action(async (opts: CommonOpts & { business: string; month?: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const month = opts.month ?? new Date().toISOString().slice(0, 7);
      if (!/^\d{4}-\d{2}$/.test(month)) throw new CliError('--month must be YYYY-MM');
      process.stdout.write(JSON.stringify(await ctx.stats.billing(id, month)) + '\n');
    });
  });

const token = program.command('token').description("a business's access tokens (shown once, stored hashed)");
common(token.command('create'))
  .description('issues an access token; prints JSON with access_token (shown only now), token_id, expires_at')
  .requiredOption('--business <id>', 'business_id')
  .option('--expires-in <duration>', 'e.g. 90d, 12h (default: no expiry)')
  .action(async (opts: CommonOpts & { business: string; expiresIn?: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      let ms: number | undefined;
      if (opts.expiresIn) {
        try {
          ms = parseDuration(opts.expiresIn);
        } catch (e) {
          throw new CliError(`--expires-in: ${(e as Error).message}`);
        }
      }
      process.stdout.write(JSON.stringify(await ctx.businesses.issueToken(id, ms)) + '\n');
    });
  });
common(token.command('revoke'))
  .description('revokes a token by its id')
  .requiredOption('--business <id>', 'business_id')
  .requiredOption('--token-id <id>', 'token_id (from token create or token list)')
  .action(async (opts: CommonOpts & { business: string; tokenId: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      if (!(await ctx.businesses.revokeToken(id, opts.tokenId))) throw new CliError(`business ${id} has no token ${opts.tokenId}`);
      process.stdout.write(JSON.stringify({ success: true }) + '\n');
    });
  });
common(token.command('list'))
  .description("lists a business's tokens (ids, expiry, revoked)")
  .requiredOption('--business <id>', 'business_id')
  .action(async (opts: CommonOpts & { business: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      process.stdout.write(JSON.stringify({ business_id: id, tokens: await ctx.businesses.tokens(id) }) + '\n');
    });
  });

const user = program.command('user').description("data requests: one user's data for one business");
for (const action of ['export', 'erase'] as const) {
  common(user.command(action))
    .description(action === 'export' ? 'prints everything held about the user (JSON)' : 'deletes everything held about the user, now')
    .requiredOption('--business <id>', 'business_id')
    .requiredOption('--wa-id <digits>', "the user's number (wa_id)")
    .option('--phone-number-id <id>', "which of the business's numbers (default: its first)")
    .action(async (opts: CommonOpts & { business: string; waId: string; phoneNumberId?: string }) => {
      await withContext(opts, async (ctx) => {
        const id = await knownBusiness(ctx, opts.business);
        const waId = opts.waId.replace(/[\s+\-()]/g, '');
        if (!/^[1-9]\d{6,14}$/.test(waId)) throw new CliError('--wa-id must be a phone number (digits)');
        const numbers = await ctx.businesses.numbersOf(id);
        const pn = opts.phoneNumberId ?? numbers[0];
        if (!pn || !numbers.includes(pn)) throw new CliError(`--phone-number-id is not a number of business ${id}`);
        if (action === 'export') {
          const data = await ctx.data.export(id, pn, waId);
          if (!data) throw new CliError('Sealpost holds nothing about this user for this business');
          process.stdout.write(JSON.stringify(data) + '\n');
        } else {
          process.stdout.write(JSON.stringify({ success: true, erased: await ctx.data.erase(id, pn, waId) }) + '\n');
        }
      });
    });
}

common(program.command('bench'))
  .description('the end-to-end benchmark (accept → delivered webhook), with the crypto and BullMQ ceilings measured in the same run')
  .option('--messages <n>', 'messages to send', '2000')
  .option('--conversations <n>', 'established conversations to spread them over', '200')
  .option('--workers <n>', 'worker processes (0: in the bench process)', '1')
  .option('--json', 'print one JSON object')
  .option('--latency-rate <n>', 'messages per second of the latency phase (default: half the measured throughput)')
  .option('--profile <dir>', 'write a V8 CPU profile of each worker process into <dir> (open in Chrome DevTools)')
  .option('--runs <n>', 'run the bench n times and print the median of each field', '1')
  .option('--matrix <counts>', 'run for each worker count (e.g. 1,2,4), --runs times each, and write the table to --out')
  .option('--out <file>', 'where --matrix writes its Markdown table', 'docs/bench-results.md')
  .option('--platform-inline', 'run the platform (transport, devices) in the bench process instead of a process of its own')
  .action(async (opts: CommonOpts & { messages: string; conversations: string; workers: string; json?: boolean; profile?: string; latencyRate?: string; runs: string; matrix?: string; out: string; platformInline?: boolean }) => {
    const c = config(opts, true);
    const [messages, conversations, workers, runs] = [opts.messages, opts.conversations, opts.workers, opts.runs].map(Number) as [number, number, number, number];
    const matrix = opts.matrix ? opts.matrix.split(',').map(Number) : [workers];
    if (!(messages > 0 && conversations > 0 && conversations <= 100_000 && matrix.every((w) => Number.isInteger(w) && w >= 0 && w <= 16) && Number.isInteger(runs) && runs >= 1 && runs <= 20)) {
      throw new CliError('--messages and --conversations must be positive (conversations at most 100000), --workers/--matrix 0 to 16, --runs 1 to 20');
    }
    const { runBench } = await import('../bench/bench.ts');
    const { medianOf, writeReport } = await import('../bench/report.ts');
    const redisUrl = await redisFor(c);
    // Progress goes to stderr in both modes: stdout carries only the result (one JSON object with --json).
    const log = (s: string): void => void process.stderr.write(`${s}\n`);
    const byWorkers = new Map<number, Awaited<ReturnType<typeof runBench>>[]>();
    for (const w of matrix) {
      const results = [];
      for (let i = 0; i < runs; i++) {
        log(`run ${i + 1}/${runs} with ${w} worker process(es)…`);
        results.push(await runBench({ redisUrl, messages, conversations, workers: w, log, platformInline: !!opts.platformInline, ...(opts.profile ? { profileDir: opts.profile } : {}), ...(opts.latencyRate ? { latencyRate: Number(opts.latencyRate) } : {}) }));
      }
      byWorkers.set(w, results);
    }
    if (opts.matrix) {
      const command = `npm run bench -- --messages ${messages} --conversations ${conversations} --runs ${runs} --matrix ${matrix.join(',')}${opts.platformInline ? ' --platform-inline' : ''}`;
      writeReport(opts.out, command, byWorkers);
      log(`wrote ${opts.out}`);
    }
    const result = { ...medianOf(byWorkers.get(matrix[0]!)!), runs };
    process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : Object.entries(result).map(([k, v]) => `${k.padEnd(30)} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n') + '\n');
    process.exit(0);
  });

const keysCmd = program.command('keys').description('key management');
common(keysCmd.command('rotate-master'))
  .description('re-wraps every business data key with the current master key (SEALPOST_MASTER_KEY); the old one must be in SEALPOST_MASTER_KEY_PREVIOUS')
  .action(async (opts: CommonOpts) => {
    await withContext(opts, async (ctx) => {
      const n = await ctx.dataKeys.rewrapAll();
      process.stdout.write(JSON.stringify({ rewrapped: n }) + '\n');
    });
  });

common(keysCmd.command('rotate-data'))
  .description("adds a version of a business's data key: every process seals with it from its start (about 40 s on), older versions keep opening what they sealed; prints JSON")
  .requiredOption('--business <id>', 'business_id')
  .action(async (opts: CommonOpts & { business: string }) => {
    await withContext(opts, async (ctx) => {
      const id = await knownBusiness(ctx, opts.business);
      const { version, activeAt } = await ctx.dataKeys.rotate(id);
      out({ business_id: id, version, active_at: activeAt });
    });
  });

common(program.command('trace'))
  .description("writes a conversation's trace as JSON Lines to stdout")
  .argument('<id>', 'a conversation id or a wamid')
  .action(async (id: string, opts: CommonOpts) => {
    const c = config(opts);
    const conv = isConversationId(id) ? id : conversationOfWamid(id);
    const ctx = createRouterContext(c, await redisFor(c), loadMasterKey(c).keys);
    try {
      const resolved = conv ?? (JSON.parse((await ctx.redis.get(ctx.keys.messageIndex(id))) ?? 'null') as { c: string } | null)?.c;
      if (!resolved) throw new CliError(`not a conversation id or a known wamid: ${id}`);
      const lines = await readTraceLines(await ctx.stores.forConversation(resolved), ctx.keys.trace(resolved), resolved);
      if (!lines.length) throw new CliError(`no trace for conversation ${resolved}`);
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await ctx.close();
    }
  });

program.command('replay')
  .description('re-runs a trace on the pure machine; exit 0 if every state and command matches, else 1 with a diff')
  .argument('<file>', 'a trace, JSON Lines')
  .action(async (file: string) => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let result;
    try {
      result = replayTrace(parseTrace(text));
    } catch (e) {
      if (e instanceof TraceFormatError) throw new CliError(`${file}: ${e.message}`);
      throw e;
    }
    if (result.ok) {
      process.stdout.write(`replay ok: ${result.steps} steps in ${result.conversations} conversation(s) match\n`);
      return;
    }
    process.stdout.write(`replay diverged at the first differing step:\n${result.diff}\n`);
    process.exitCode = 1;
  });

/** Runs the CLI; errors become one line on stderr and exit code 1. */
export async function main(argv = process.argv): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const known = e instanceof CliError || e instanceof ConfigError || e instanceof RedisUnavailableError;
    process.stderr.write(`sealpost: ${known ? (e as Error).message : `unexpected error: ${(e as Error).message}`}\n`);
    process.exit(1);
  }
}

await main();
