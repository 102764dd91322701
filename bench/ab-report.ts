/**
 * The table of an A/B made by bench/ab.sh: for each field, every side's runs and their median.
 *   npx tsx bench/ab-report.ts OUTDIR A,B[,C...]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const FIELDS = [
  'msgs_per_s', 'ratio_to_crypto_ceiling', 'p50_ms', 'p99_ms', 'saturated_p50_ms', 'redis_commands_per_message',
  'redis_scripts_per_message', 'worker_cpu_ms_per_message', 'redis_cpu_ms_per_message', 'router_cpu_ms_per_message',
  'api_cpu_ms_per_message', 'platform_cpu_ms_per_message', 'crypto_ceiling_msgs_per_s', 'first_contact_per_s', 'worker_rss_mb',
  'paced_worker_cpu_ms_per_message', 'paced_router_cpu_ms_per_message', 'paced_redis_commands_per_message',
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const [dir, names] = process.argv.slice(2);
if (!dir || !names) {
  console.error('usage: npx tsx bench/ab-report.ts OUTDIR A,B[,C...]');
  process.exit(2);
}
const sides = names.split(',');
const runs = new Map(sides.map((n) => [n, readdirSync(dir).filter((f) => f.startsWith(`${n}-`) && f.endsWith('.json')).sort()
  .map((f) => readFileSync(join(dir, f), 'utf8').trim()).filter(Boolean).map((t) => JSON.parse(t) as Record<string, unknown>)]));
console.log(`| field | ${sides.map((n) => `${n} (runs → median)`).join(' | ')} |`);
console.log(`|---|${sides.map(() => '---|').join('')}`);
for (const f of FIELDS) {
  const cells = sides.map((n) => {
    const v = runs.get(n)!.map((r) => r[f]).filter((x): x is number => typeof x === 'number');
    return v.length ? `${v.join(' / ')} → **${Math.round(median(v) * 1000) / 1000}**` : '';
  });
  console.log(`| \`${f}\` | ${cells.join(' | ')} |`);
}
