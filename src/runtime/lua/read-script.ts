import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';

/**
 * The text of a Lua script in this folder. Scripts live as files, each with a KEYS/ARGV header, so what a
 * script touches is read next to its code rather than inside a TypeScript string.
 */
export function readLuaScript(file: string): string {
  return readFileSync(new URL(`./${file}`, import.meta.url), 'utf8');
}

/**
 * A script of this folder run by its SHA1 (EVALSHA): Redis neither receives nor hashes the text again on
 * every call, as it does with EVAL. A Redis that does not have it yet (restarted, flushed, another cluster
 * node) answers NOSCRIPT, and the script goes once in full (EVAL, which also caches it).
 */
export class LuaScript {
  readonly lua: string;
  readonly sha: string;

  constructor(file: string) {
    this.lua = readLuaScript(file);
    this.sha = createHash('sha1').update(this.lua).digest('hex');
  }

  async run(redis: Redis | Cluster, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!String((e as Error).message).startsWith('NOSCRIPT')) throw e;
      return redis.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}
