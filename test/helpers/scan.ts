import { Redis } from 'ioredis';
import { decodeTraceEntry } from '../../src/trace/store.ts';

/**
 * Every key under `prefix` with its value(s) flattened to one string, whatever the Redis type. Traces are
 * stored compressed: their entries are expanded, so a scan for a canary sees what a trace holds.
 */
export async function dumpPrefix(url: string, prefix: string): Promise<Map<string, string>> {
  const r = new Redis(url);
  const out = new Map<string, string>();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const type = await r.type(key);
        let value = '';
        if (type === 'string') value = (await r.get(key)) ?? '';
        else if (type === 'hash') value = JSON.stringify(await r.hgetall(key));
        else if (type === 'list' && /\{c:([^}]+)\}:trace$/.test(key)) {
          const conv = /\{c:([^}]+)\}/.exec(key)![1]!;
          value = (await r.lrangeBuffer(key, 0, -1)).flatMap((e) => decodeTraceEntry(conv, e)).join('\n');
        } else if (type === 'list') value = (await r.lrange(key, 0, -1)).join('\n');
        else if (type === 'set') value = (await r.smembers(key)).join('\n');
        else if (type === 'zset') value = (await r.zrange(key, '0', '-1', 'WITHSCORES')).join('\n');
        else if (type === 'stream') value = JSON.stringify(await r.xrange(key, '-', '+'));
        out.set(key, value);
      }
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return out;
}

/** The keys whose name or value contains `needle`. */
export function keysContaining(dump: Map<string, string>, needle: string): string[] {
  return [...dump].filter(([k, v]) => k.includes(needle) || v.includes(needle)).map(([k]) => k);
}
