import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { ConnectionOptions } from 'bullmq';

/**
 * Connections for both deployments: one Redis (`redis://`, `rediss://`) or a Redis Cluster
 * (`redis-cluster://host:port,host:port,...`, `rediss-cluster://` for TLS; a password as in
 * `redis-cluster://:secret@host:port,...`). Every key Sealpost writes together carries a hash tag
 * (`{c:<conversation>}`, `{w:<business>}`, `{conversations}`...), and everything else is written key by key,
 * so the same code runs on both (docs/cluster.md).
 */

/** True for a Redis Cluster URL. */
export function isClusterUrl(url: string): boolean {
  return /^rediss?-cluster:\/\//i.test(url);
}

/** The seed nodes and credentials of a cluster URL. */
export function parseClusterUrl(url: string): { nodes: { host: string; port: number }[]; password?: string; username?: string; tls: boolean } {
  const m = /^(rediss?)-cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)/i.exec(url);
  if (!m) throw new Error(`not a Redis Cluster URL: ${url.replace(/\/\/[^@/]*@/, '//***@')}`);
  const nodes = m[4]!.split(',').filter(Boolean).map((hp) => {
    const i = hp.lastIndexOf(':');
    const host = i > 0 ? hp.slice(0, i) : hp;
    const port = i > 0 ? Number(hp.slice(i + 1)) : 6379;
    if (!host || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad cluster node "${hp}" in the Redis URL`);
    return { host, port };
  });
  return {
    nodes,
    ...(m[3] !== undefined ? { password: decodeURIComponent(m[3]) } : {}),
    ...(m[2] ? { username: decodeURIComponent(m[2]) } : {}),
    tls: m[1]!.toLowerCase() === 'rediss',
  };
}

/**
 * A client for `url`: a `Redis`, or for a cluster URL an ioredis `Cluster` (typed as `Redis`: it has the same
 * command API; code that must see every node uses {@link mastersOf}).
 */
export function connectRedis(url: string, opts: RedisOptions & { enableAutoPipelining?: boolean } = {}): Redis {
  if (!isClusterUrl(url)) {
    const r = new Redis(url, opts);
    if (opts.enableAutoPipelining) coalesceWrites(r);
    return r;
  }
  const { nodes, password, username, tls } = parseClusterUrl(url);
  const { enableAutoPipelining, lazyConnect, ...redisOptions } = opts;
  const cluster = new Cluster(nodes, {
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    // ioredis picks an auto-pipeline's node from a command's first argument, which for scripts is the key
    // count, not a key: scripts would go to a random node and bounce with MOVED (redis/ioredis#2109, #1890).
    autoPipeliningIgnoredCommands: ['eval', 'evalsha', 'call', 'sealpostCommit'],
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    redisOptions: { ...redisOptions, ...(password !== undefined ? { password } : {}), ...(username ? { username } : {}), ...(tls ? { tls: {} } : {}) },
    // Commands retried through MOVED/ASK and short topology changes (a failover, a resharding).
    maxRedirections: 16,
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 300,
  }) as unknown as Redis;
  if (enableAutoPipelining) cluster.on('+node', (node: Redis) => coalesceWrites(node));
  return cluster as unknown as Redis;
}

/**
 * Writes to the connection's socket within one turn of the event loop go out together: the socket is corked
 * at the first and uncorked once the turn's callbacks and promise jobs have run (setImmediate), so a busy
 * process makes one write system call where each drain's commands, issued from different continuations, made
 * one each (ioredis's auto-pipelining joins only commands of one tick). A write waits at most for the rest of
 * the current turn.
 */
function coalesceWrites(r: Redis): void {
  const patch = () => {
    const socket = (r as unknown as { stream?: import('node:net').Socket }).stream;
    if (!socket || (socket as { sealpostCorked?: boolean }).sealpostCorked) return;
    (socket as { sealpostCorked?: boolean }).sealpostCorked = true;
    const write = socket.write.bind(socket) as (...a: unknown[]) => boolean;
    let corked = false;
    socket.write = ((...args: unknown[]) => {
      if (!corked) {
        corked = true;
        socket.cork();
        setImmediate(() => {
          corked = false;
          socket.uncork();
        });
      }
      return write(...args);
    }) as typeof socket.write;
  };
  r.on('connect', patch);
}

/** True when `r` is a cluster client. */
export function isCluster(r: Redis): boolean {
  return r instanceof Cluster;
}

/** The nodes holding data: every master of a cluster (once it knows them), or the one Redis. */
export async function mastersOf(r: Redis): Promise<Redis[]> {
  if (!(r instanceof Cluster)) return [r];
  const c = r as Cluster;
  if (c.status !== 'ready') {
    if (c.status === 'wait') void c.connect().catch(() => {});
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the Redis Cluster did not become ready')), 10_000);
      c.once('ready', () => { clearTimeout(t); resolve(); });
    });
  }
  return c.nodes('master');
}

/**
 * BullMQ's connection for `url`: options for a single Redis (each queue and worker opens its own), or a shared
 * `Cluster` client for a cluster (BullMQ duplicates it for a worker's blocking connection; the queue names are
 * hash-tagged, so each queue's keys live in one slot). `maxRetriesPerRequest: null`, as BullMQ requires.
 */
export function bullConnection(url: string): ConnectionOptions {
  if (!isClusterUrl(url)) return { url, maxRetriesPerRequest: null } as ConnectionOptions;
  return connectRedis(url, { maxRetriesPerRequest: null }) as unknown as ConnectionOptions;
}

/** Calls `fn` with each batch of keys matching `match`, on every master (SCAN, never KEYS). */
export async function scanEach(r: Redis, match: string, fn: (keys: string[]) => Promise<void>): Promise<void> {
  for (const node of await mastersOf(r)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await fn(keys);
    } while (cursor !== '0');
  }
}
