import { isClusterUrl, parseClusterUrl } from './redis/connect.ts';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { z } from 'zod';
import type { TracingSettings } from './ops/tracing.ts';

/** The longest duration text taken: `2592000000ms` has 12 characters; anything much longer is not a duration. */
const MAX_DURATION_TEXT = 32;

/** Parses a duration like `30d`, `10m`, `5s`, `250ms` or a bare number of milliseconds. */
export function parseDuration(text: string): number {
  // Length first, then a pattern without nested or adjacent open-ended repeats: a megabyte of spaces from an
  // admin request or a setting must cost microseconds, not stall the event loop in backtracking.
  if (text.length > MAX_DURATION_TEXT) throw new Error(`invalid duration "${text.slice(0, 16)}…" (${text.length} characters; at most ${MAX_DURATION_TEXT})`);
  const m = /^(\d+(?:\.\d+)?) ?(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (use e.g. 30d, 12h, 10m, 5s, 250ms)`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[(m[2] ?? 'ms') as 'ms'];
  const ms = Math.round(n * unit);
  if (ms <= 0) throw new Error(`duration "${text}" must be positive`);
  return ms;
}

/** Parses a byte size like `500m`, `2g`, `64k` (binary multiples: 1k = 1024) or a bare number of bytes. */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size "${text}" (use e.g. 500m, 2g, 64k or a number of bytes)`);
  const bytes = Math.floor(Number(m[1]) * 1024 ** 'bkmgt'.indexOf((m[2] ?? 'b').toLowerCase()));
  if (bytes <= 0 || !Number.isSafeInteger(bytes)) throw new Error(`size "${text}" must be positive and below 8 PiB`);
  return bytes;
}

const byteSize = z.string().transform((s, ctx) => {
  try {
    return parseByteSize(s);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const duration = z.string().transform((s, ctx) => {
  try {
    return parseDuration(s);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const MAX_RETENTION_MS = 30 * 86400e3;

/** Which proxies the API believes about the client's address: none, a number of hops, or these addresses. */
export type TrustProxy = false | number | string[];

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;
const IPV6_CIDR = /^[0-9a-f:.]{2,45}(?:\/(\d{1,3}))?$/i;
/** proxy-addr's (Fastify's) names for address ranges. */
const RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function parseTrustProxy(v: string, ctx: z.RefinementCtx): TrustProxy {
  const text = v.trim().toLowerCase();
  if (text === '' || text === '0' || text === 'false') return false;
  if (/^\d{1,2}$/.test(text)) return Number(text);
  if (text === 'true') {
    ctx.addIssue({ code: 'custom', message: 'SEALPOST_TRUST_PROXY=true would believe every X-Forwarded-For entry, which the client writes: give the number of proxy hops (e.g. 1) or the proxies\' addresses/CIDRs' });
    return z.NEVER;
  }
  const entries = text.split(',').map((e) => e.trim()).filter(Boolean);
  for (const e of entries) {
    const v4 = IPV4_CIDR.exec(e);
    const ok = RANGE_NAMES.has(e)
      || (v4 !== null && v4.slice(1, 5).every((o) => Number(o) <= 255) && (v4[5] === undefined || Number(v4[5]) <= 32))
      || (v4 === null && e.includes(':') && IPV6_CIDR.test(e) && URL.canParse(`http://[${e.split('/')[0]}]/`) && (!e.includes('/') || Number(e.split('/')[1]) <= 128));
    if (!ok) {
      ctx.addIssue({ code: 'custom', message: `SEALPOST_TRUST_PROXY: "${e.slice(0, 60)}" is neither a hop count nor an IP address or CIDR (e.g. 1, or 10.0.0.0/8,127.0.0.1)` });
      return z.NEVER;
    }
  }
  return entries;
}

const schema = z.object({
  prefix: z.string().regex(/^[A-Za-z0-9_.-]{1,40}$/, 'SEALPOST_PREFIX: letters, digits, _ . - only').default('sp'),
  redisUrl: z.string().refine((u) => {
    if (isClusterUrl(u)) {
      try {
        return parseClusterUrl(u).nodes.length > 0;
      } catch {
        return false;
      }
    }
    return /^rediss?:\/\/\S+$/.test(u) && URL.canParse(u);
  }, 'REDIS_URL must be redis://host:port, rediss://… or redis-cluster://host:port,host:port,…').optional(),
  dataDir: z.string().default('.data'),
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  platformPort: z.coerce.number().int().min(0).max(65535).default(8081),
  /** A worker-only process serves /metrics on this port when set (API processes serve it on the API port). */
  metricsPort: z.coerce.number().int().min(0).max(65535).optional(),
  platformUrl: z.string().url().optional(),
  apiUrl: z.string().url().optional(),
  adminToken: z.string().min(16, 'SEALPOST_ADMIN_TOKEN must be at least 16 characters').optional(),
  masterKey: z.string().optional(),
  masterKeyFile: z.string().optional(),
  masterKeyPrevious: z.string().optional(),
  retentionMs: duration.default(MAX_RETENTION_MS).refine((ms) => ms <= MAX_RETENTION_MS, 'SEALPOST_RETENTION is at most 30d'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  workerConcurrency: z.coerce.number().int().min(1).max(1000).default(32),
  /**
   * A conversation's single-writer lease: renewed every third of it while a drain runs; a process that stalls
   * longer loses it (its commit is refused) and, with it, its shard claims lapse.
   */
  leaseMs: z.coerce.number().int().min(1000).max(600_000).default(15_000),
  /**
   * Conversations one shard's wake-up job drains at once (docs/performance.md, "Shards"): more batch better
   * under load, fewer give lower latency at moderate load.
   */
  shardDrains: z.coerce.number().int().min(1).max(64).default(4),
  webhookConcurrency: z.coerce.number().int().min(1).max(1000).default(32),
  webhookBackoffBaseMs: z.coerce.number().int().min(1).default(1000),
  webhookBackoffMaxMs: z.coerce.number().int().min(1).default(3600e3),
  webhookMaxAgeMs: duration.default(7 * 86400e3),
  webhookTimeoutMs: z.coerce.number().int().min(100).default(10_000),
  webhookBatch: z.coerce.number().int().min(1).max(1000).default(1000),
  /** Refuse webhook URLs that are, or resolve to, loopback, private or link-local addresses (checked on every connection too). */
  webhookDenyPrivate: z.enum(['0', '1', 'true', 'false']).default('0').transform((v) => v === '1' || v === 'true'),
  sweepEveryMs: z.coerce.number().int().min(100).default(60_000),
  /** Refused requests (bad tokens, oversized bodies) one client address may send per window before 429. */
  abuseLimit: z.coerce.number().int().min(1).default(50),
  abuseWindowMs: duration.default(60_000),
  /**
   * Behind reverse proxies: how far to believe X-Forwarded-For. A hop count N (the client is the N-th address
   * from the right), or the proxies' addresses and CIDRs; never "trust every entry", since the left-most ones
   * are the client's own to write.
   */
  trustProxy: z.string().default('0').transform((v, ctx) => parseTrustProxy(v, ctx)),
  /**
   * `eu=redis://…,us=redis-cluster://h1:p1,h2:p2`: where region-pinned businesses keep their data. A comma
   * starts the next region only where `name=` follows it, so a cluster's node list stays in its URL.
   */
  regions: z.string().default('').transform((s, ctx) => {
    const out: Record<string, string> = {};
    for (const part of s.split(/,(?=\s*[a-z0-9_-]{1,32}=)/).map((p) => p.trim()).filter(Boolean)) {
      const m = /^([a-z0-9_-]{1,32})=((?:rediss?|redis-cluster):\/\/\S+)$/.exec(part);
      if (!m) {
        ctx.addIssue({ code: 'custom', message: `SEALPOST_REGIONS: "${part.replace(/\/\/[^@]*@/, '//***@')}" is not name=redis://host:port or name=redis-cluster://host:port,host:port` });
        return z.NEVER;
      }
      out[m[1]!] = m[2]!;
    }
    return out;
  }),
  /** SEALPOST_MEDIA_QUOTA: the bytes of media (uploaded and received) one business may keep at once. */
  mediaQuotaBytes: byteSize.default(1 << 30),
  bundleRetryMs: z.coerce.number().int().min(1).default(5000),
  retransmitBaseMs: z.coerce.number().int().min(1).default(5000),
  retransmitMaxMs: z.coerce.number().int().min(1).default(15 * 60_000),
});

/**
 * The validated configuration: read once at start; nothing else reads `process.env` (but the OpenTelemetry
 * SDK, which reads its own standard `OTEL_*` variables once tracing is on).
 */
export type Config = z.infer<typeof schema> & { tracing: TracingSettings };

/**
 * Tracing is on when an OTLP endpoint is set (for traces or for all signals) and the SDK is not disabled
 * (OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none).
 */
export function tracingSettings(env: NodeJS.ProcessEnv): TracingSettings {
  const endpoint = (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT || '').trim();
  const disabled = (env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true' || (env.OTEL_TRACES_EXPORTER ?? '').trim().toLowerCase() === 'none';
  return { enabled: endpoint !== '' && !disabled, serviceNameSet: !!env.OTEL_SERVICE_NAME?.trim(), detectorsSet: !!env.OTEL_NODE_RESOURCE_DETECTORS?.trim() };
}

/** Command-line flags that override the environment. */
export interface ConfigOverrides {
  redisUrl?: string;
  platformUrl?: string;
  apiUrl?: string;
  port?: number | string;
  dataDir?: string;
  prefix?: string;
}

/** Raised for invalid configuration; the message is one line naming the bad setting. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * Reads and validates the configuration from the environment plus CLI overrides.
 * @example const config = loadConfig(process.env, { redisUrl: opts.redisUrl });
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: ConfigOverrides = {}): Config {
  const raw = {
    prefix: overrides.prefix ?? env.SEALPOST_PREFIX,
    redisUrl: overrides.redisUrl ?? env.REDIS_URL,
    dataDir: overrides.dataDir ?? env.SEALPOST_DATA_DIR,
    host: env.HOST,
    port: overrides.port ?? env.PORT,
    platformPort: env.PLATFORM_PORT,
    metricsPort: env.SEALPOST_METRICS_PORT,
    platformUrl: overrides.platformUrl ?? env.PLATFORM_URL,
    apiUrl: overrides.apiUrl ?? env.SEALPOST_API_URL,
    adminToken: env.SEALPOST_ADMIN_TOKEN,
    masterKey: env.SEALPOST_MASTER_KEY,
    masterKeyFile: env.SEALPOST_MASTER_KEY_FILE,
    masterKeyPrevious: env.SEALPOST_MASTER_KEY_PREVIOUS,
    retentionMs: env.SEALPOST_RETENTION,
    logLevel: env.LOG_LEVEL,
    workerConcurrency: env.SEALPOST_WORKER_CONCURRENCY,
    leaseMs: env.SEALPOST_LEASE_MS,
    shardDrains: env.SEALPOST_SHARD_DRAINS,
    webhookConcurrency: env.SEALPOST_WEBHOOK_CONCURRENCY,
    webhookBackoffBaseMs: env.SEALPOST_WEBHOOK_BACKOFF_BASE_MS,
    webhookBackoffMaxMs: env.SEALPOST_WEBHOOK_BACKOFF_MAX_MS,
    webhookMaxAgeMs: env.SEALPOST_WEBHOOK_MAX_AGE,
    webhookTimeoutMs: env.SEALPOST_WEBHOOK_TIMEOUT_MS,
    webhookBatch: env.SEALPOST_WEBHOOK_BATCH,
    webhookDenyPrivate: env.SEALPOST_WEBHOOK_DENY_PRIVATE,
    sweepEveryMs: env.SEALPOST_SWEEP_EVERY_MS,
    abuseLimit: env.SEALPOST_ABUSE_LIMIT,
    abuseWindowMs: env.SEALPOST_ABUSE_WINDOW,
    trustProxy: env.SEALPOST_TRUST_PROXY,
    regions: env.SEALPOST_REGIONS,
    mediaQuotaBytes: env.SEALPOST_MEDIA_QUOTA,
    bundleRetryMs: env.SEALPOST_BUNDLE_RETRY_MS,
    retransmitBaseMs: env.SEALPOST_RETRANSMIT_BASE_MS,
    retransmitMaxMs: env.SEALPOST_RETRANSMIT_MAX_MS,
  };
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && v !== '')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`invalid configuration: ${issue.path.join('.') || 'value'}: ${issue.message}`);
  }
  return { ...parsed.data, tracing: tracingSettings(env) };
}

/** The platform URL: --platform-url / PLATFORM_URL, else the default local port. */
export function platformUrlOf(config: Config): string {
  return config.platformUrl ?? `http://127.0.0.1:${config.platformPort}`;
}

/** The API URL: --api-url / SEALPOST_API_URL, else the default local port. */
export function apiUrlOf(config: Config): string {
  return config.apiUrl ?? `http://127.0.0.1:${config.port}`;
}

/**
 * The 32-byte master key: SEALPOST_MASTER_KEY (base64), else the key file, else `<dataDir>/master.key`,
 * generated on first use (`generated` tells the caller to say so).
 */
export function loadMasterKey(config: Config): { key: Buffer; keys: Buffer[]; source: string; generated: boolean } {
  const current = loadCurrentMasterKey(config);
  // Older master keys (comma-separated, base64) still unwrap data keys during a rotation.
  const previous = (config.masterKeyPrevious ?? '').split(',').map((k) => k.trim()).filter(Boolean).map((k) => {
    const b = Buffer.from(k, 'base64');
    if (b.length !== 32) throw new ConfigError('SEALPOST_MASTER_KEY_PREVIOUS: each key must be 32 bytes, base64-encoded');
    return b;
  });
  return { ...current, keys: [current.key, ...previous] };
}

function loadCurrentMasterKey(config: Config): { key: Buffer; source: string; generated: boolean } {
  const check = (key: Buffer, where: string) => {
    if (key.length !== 32) throw new ConfigError(`${where}: the master key must be 32 bytes, base64-encoded`);
    return key;
  };
  if (config.masterKey) {
    return { key: check(Buffer.from(config.masterKey, 'base64'), 'SEALPOST_MASTER_KEY'), source: 'SEALPOST_MASTER_KEY', generated: false };
  }
  const file = config.masterKeyFile ?? path.join(config.dataDir, 'master.key');
  if (existsSync(file)) {
    return { key: check(Buffer.from(readFileSync(file, 'utf8').trim(), 'base64'), file), source: file, generated: false };
  }
  if (config.masterKeyFile) throw new ConfigError(`SEALPOST_MASTER_KEY_FILE ${file} does not exist`);
  mkdirSync(path.dirname(file), { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, key.toString('base64') + '\n', { mode: 0o600 });
  return { key, source: file, generated: true };
}
