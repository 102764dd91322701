import { readFileSync } from 'node:fs';

/**
 * The text of a Lua script in this folder. Scripts live as files, each with a KEYS/ARGV header, so what a
 * script touches is read next to its code rather than inside a TypeScript string.
 */
export function readLuaScript(file: string): string {
  return readFileSync(new URL(`./${file}`, import.meta.url), 'utf8');
}
