import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { resolveRedis } from '../src/redis/resolve.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/** Finds the Redis the suite runs against, exactly as the product does; tests use their own key prefixes. */
export default async function setup(project: TestProject): Promise<void> {
  const { url } = await resolveRedis({ url: process.env.REDIS_URL, dataDir: '.data/test' });
  project.provide('redisUrl', url);
}
