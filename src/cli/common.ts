import type { Command } from 'commander';
import { loadConfig, loadMasterKey, type Config, type ConfigOverrides } from '../config.ts';
import { configureLogging } from '../log.ts';
import { redactUrl, resolveRedis } from '../redis/resolve.ts';
import { Provisioning, type ProvisioningError } from '../runtime/provisioning.ts';
import { createRouterContext, type RouterContext } from '../runtime/router.ts';

/** A CLI failure: printed as one line, exit code 1. */
export class CliError extends Error {}

/** The options every command takes (see {@link common}). */
export interface CommonOpts extends ConfigOverrides {
  port?: string;
}

/** Adds the options every command takes: where Redis, the platform and the API are. */
export function common(cmd: Command): Command {
  return cmd
    .option('--redis-url <url>', 'Redis to use (default: REDIS_URL, else 127.0.0.1:6379, else one Sealpost starts)')
    .option('--platform-url <url>', 'the transport/platform server (default: PLATFORM_URL or http://127.0.0.1:8081)')
    .option('--api-url <url>', 'the Sealpost API (default: SEALPOST_API_URL or http://127.0.0.1:8080)');
}

/** Loads the configuration; logs default to `info`, or `warn` where a person reads the screen (the demo). */
export function config(opts: CommonOpts, quietByDefault = false): Config {
  const c = loadConfig(process.env, opts);
  configureLogging({ level: c.logLevel ?? (quietByDefault ? 'warn' : 'info') });
  return c;
}

/** The Redis to use, resolved as the contract says (saying so on stderr when Sealpost started one). */
export async function redisFor(c: Config): Promise<string> {
  const r = await resolveRedis({ url: c.redisUrl, dataDir: c.dataDir });
  if (r.source === 'spawned') process.stderr.write(`sealpost: started redis-server at ${redactUrl(r.url)} (data in ${c.dataDir}/redis)\n`);
  return r.url;
}

/** Prints one JSON object on a line of its own (what scripts read). */
export const out = (v: unknown): void => void process.stdout.write(JSON.stringify(v) + '\n');

/** POSTs JSON to a running server; an unreachable one is a one-line reason. */
export async function postJson(url: string, body: unknown): Promise<{ status: number; json: any }> {
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

/** Runs `fn` with a router context (Redis resolved, master key loaded), closing it afterwards. */
export async function withContext<T>(opts: CommonOpts, fn: (ctx: RouterContext) => Promise<T>): Promise<T> {
  const c = config(opts, true);
  const ctx = createRouterContext(c, await redisFor(c), loadMasterKey(c).keys);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** Runs `fn` with the provisioning service over a router context (see {@link withContext}). */
export async function withProvisioning<T>(opts: CommonOpts, fn: (p: Provisioning, ctx: RouterContext) => Promise<T>): Promise<T> {
  return withContext(opts, (ctx) => fn(new Provisioning({
    businesses: ctx.businesses, publisher: ctx.publisher, dataKeys: ctx.dataKeys, groups: ctx.groups,
    denyPrivate: ctx.config.webhookDenyPrivate, regions: Object.keys(ctx.config.regions),
  }), ctx));
}

/**
 * A provisioning refusal as the CLI's one-line reason: the flag that gave the field where the service names a
 * field (`--webhook-url refused: ...`), and the CLI's own words where the API's would name JSON fields.
 */
export function cliReason(e: ProvisioningError): string {
  const flag = `--${e.field.replace(/_/g, '-')}`;
  if (e.field === 'name' && e.code === 'empty') return '--name must not be empty';
  if (e.field === 'app_secret' && (e.code === 'empty' || e.code === 'too_short')) return '--app-secret must be at least 8 characters';
  if (e.code === 'not_http') return `${flag}: not an http(s) URL: ${e.value}`;
  if (e.code === 'together') return '--webhook-url and --verify-token go together';
  if (e.code === 'nothing_to_change') return 'nothing to change: give --name, --retention or --webhook-url with --verify-token';
  return e.message.startsWith(`${e.field} `) ? flag + e.message.slice(e.field.length) : e.message;
}
