import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BenchResult } from './bench.ts';
import { latencyChart, scalingChart } from './charts.ts';

/** The median of each numeric field over runs (objects such as byte breakdowns: per key). */
export function medianOf(runs: BenchResult[]): BenchResult {
  const med = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 ? s[mid]! : Number(((s[mid - 1]! + s[mid]!) / 2).toFixed(3));
  };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(runs[0]!)) {
    if (typeof v === 'number') out[k] = med(runs.map((r) => (r as unknown as Record<string, number>)[k]!));
    else if (v && typeof v === 'object') {
      const keys = new Set(runs.flatMap((r) => Object.keys((r as unknown as Record<string, Record<string, number>>)[k] ?? {})));
      out[k] = Object.fromEntries([...keys].map((kk) => [kk, med(runs.map((r) => (r as unknown as Record<string, Record<string, number>>)[k]?.[kk] ?? 0))]));
    } else out[k] = v;
  }
  return out as unknown as BenchResult;
}

const FIELDS: (keyof BenchResult)[] = [
  'msgs_per_s', 'p50_ms', 'p99_ms', 'saturated_p50_ms', 'saturated_p99_ms', 'latency_phase_rate_per_s',
  'crypto_ceiling_msgs_per_s', 'ratio_to_crypto_ceiling', 'bullmq_noop_jobs_per_s', 'ratio_to_bullmq_noop',
  'first_contact_per_s', 'redis_bytes_per_conversation', 'cpu_ms_per_message', 'api_cpu_ms_per_message', 'worker_cpu_ms_per_message',
  'platform_cpu_ms_per_message', 'redis_cpu_ms_per_message', 'router_cpu_ms_per_message', 'total_cpu_ms_per_message', 'redis_commands_per_message', 'redis_scripts_per_message',
  'paced_worker_cpu_ms_per_message', 'paced_router_cpu_ms_per_message', 'paced_redis_commands_per_message', 'worker_rss_mb',
];

/**
 * Writes the results of a bench matrix (worker counts × runs) as a Markdown page: one table of medians per
 * worker count, every run's value beside it, and the command that produced it. Generated, never edited.
 */
export function writeReport(file: string, command: string, byWorkers: Map<number, BenchResult[]>): void {
  const counts = [...byWorkers.keys()];
  const medians = new Map(counts.map((w) => [w, medianOf(byWorkers.get(w)!)]));
  const lines = [
    '# Benchmark results (generated)',
    '',
    `Written by \`${command}\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}.`,
    'Everything on this one machine: Redis, the platform and its devices, the API, the webhook receiver and the worker processes.',
    'Each cell is the median of the runs; the runs follow in brackets. Do not edit: run the command again.',
    '',
    `| field | ${counts.map((w) => `${w} worker${w === 1 ? '' : 's'}`).join(' | ')} |`,
    `|---|${counts.map(() => '---').join('|')}|`,
    ...FIELDS.map((f) => `| \`${f}\` | ${counts.map((w) => `**${medians.get(w)![f]}** (${byWorkers.get(w)!.map((r) => r[f]).join(' / ')})`).join(' | ')} |`),
    '',
    'Redis bytes per idle conversation by kind of key (medians):',
    '',
    `| key | ${counts.map((w) => `${w} worker${w === 1 ? '' : 's'}`).join(' | ')} |`,
    `|---|${counts.map(() => '---').join('|')}|`,
    ...Object.keys(medians.get(counts[0]!)!.redis_bytes_by_kind).map((k) => `| ${k} | ${counts.map((w) => medians.get(w)!.redis_bytes_by_kind[k] ?? 0).join(' | ')} |`),
    '',
  ];
  const breakdown = (title: string, field: 'first_contact_cpu_ms' | 'redis_commands_by_name', head: string) => {
    const keys = Object.keys(medians.get(counts[0]!)![field] ?? {});
    if (!keys.length) return;
    lines.push(title, '', `| ${head} | ${counts.map((w) => `${w} worker${w === 1 ? '' : 's'}`).join(' | ')} |`, `|---|${counts.map(() => '---').join('|')}|`,
      ...keys.map((k) => `| ${k} | ${counts.map((w) => (medians.get(w)![field] as Record<string, number>)[k] ?? 0).join(' | ')} |`), '');
  };
  breakdown('CPU ms per first contact, by process (medians):', 'first_contact_cpu_ms', 'process');
  breakdown('Redis calls per message in the throughput phase, by command, inner script commands included (medians):', 'redis_commands_by_name', 'command');
  const rssKeys = Object.keys(medians.get(counts[0]!)!.worker_rss_mb_by_conversations ?? {});
  if (rssKeys.length) {
    lines.push(
      'Worker RSS (MB, all worker processes) as established conversations grew during first contact (medians):',
      '',
      `| conversations | ${counts.map((w) => `${w} worker${w === 1 ? '' : 's'}`).join(' | ')} |`,
      `|---|${counts.map(() => '---').join('|')}|`,
      ...rssKeys.map((k) => `| ${k} | ${counts.map((w) => medians.get(w)!.worker_rss_mb_by_conversations[k] ?? '').join(' | ')} |`),
      '',
    );
  }
  // The charts beside the table, named after it: the latency distributions and the scaling by worker count.
  const base = file.replace(/\.md$/, '');
  const latencyFile = `${base}-latency.svg`;
  const scalingFile = `${base}-scaling.svg`;
  writeFileSync(latencyFile, latencyChart(counts.flatMap((w) => {
    const m = medians.get(w)!;
    const n = `${w} worker${w === 1 ? '' : 's'}`;
    return [
      { label: `${n}, half load (${m.latency_phase_rate_per_s}/s)`, quantiles: m.latency_quantiles_ms ?? {} },
      { label: `${n}, saturated`, quantiles: m.saturated_latency_quantiles_ms ?? {} },
    ];
  })));
  writeFileSync(scalingFile, scalingChart(counts.map((w) => {
    const m = medians.get(w)!;
    return {
      workers: w,
      msgsPerS: m.msgs_per_s,
      cpuMs: { workers: m.worker_cpu_ms_per_message, Redis: m.redis_cpu_ms_per_message, API: m.api_cpu_ms_per_message ?? 0, 'bench client': m.cpu_ms_per_message, platform: m.platform_cpu_ms_per_message },
    };
  })));
  lines.push('Accept → delivered latency (medians of the runs\' quantiles), and throughput and CPU per message by worker processes:', '',
    `![latency distribution](${path.basename(latencyFile)})`, '', `![throughput and CPU per message](${path.basename(scalingFile)})`, '');
  writeFileSync(file, lines.join('\n'));
}
