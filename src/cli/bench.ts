import type { Command } from 'commander';
import { CliError, common, config, redisFor, type CommonOpts } from './common.ts';

type BenchOpts = CommonOpts & {
  messages: string; conversations: string; workers: string; json?: boolean; profile?: string; latencyRate?: string; runs: string; matrix?: string; out: string; platformInline?: boolean; tracing?: boolean; devicesPerUser: string; numbers: string; groupMembers?: string; groups: string;
};

/** `bench`: the end-to-end benchmark, with the crypto and BullMQ ceilings measured in the same run. */
export function benchCommand(program: Command): void {
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
    .option('--tracing', 'trace every message (sampler at 100 %) in the API and worker processes, exporting over OTLP to a sink that discards')
    .option('--devices-per-user <n>', 'devices of each bench user, 1 to 5: the phone plus n - 1 linked companions, each sent every message', '1')
    .option('--numbers <n>', 'the business\'s phone numbers the users are spread over, 1 to 16, each at the top throughput (1,000 messages a second)', '4')
    .option('--group-members <n>', 'instead: the group bench, groups of n members (1 to 8), group sends against one-to-one sends in the same run')
    .option('--groups <n>', 'with --group-members: how many groups', '20')
    .action(runBenchCommand);
}

async function runBenchCommand(opts: BenchOpts): Promise<void> {
  const c = config(opts, true);
  const [messages, conversations, workers, runs] = [opts.messages, opts.conversations, opts.workers, opts.runs].map(Number) as [number, number, number, number];
  const matrix = opts.matrix ? opts.matrix.split(',').map(Number) : [workers];
  if (!(messages > 0 && conversations > 0 && conversations <= 100_000 && matrix.every((w) => Number.isInteger(w) && w >= 0 && w <= 16) && Number.isInteger(runs) && runs >= 1 && runs <= 20)) {
    throw new CliError('--messages and --conversations must be positive (conversations at most 100000), --workers/--matrix 0 to 16, --runs 1 to 20');
  }
  if (opts.groupMembers !== undefined) return runGroupBenchCommand(opts, messages, workers, runs);
  if (opts.tracing && matrix.includes(0)) throw new CliError('--tracing traces the worker processes: give --workers 1 or more');
  if (!/^[1-5]$/.test(opts.devicesPerUser.trim())) {
    throw new CliError(`--devices-per-user must be an integer from 1 to 5 (the phone plus up to 4 linked companions), not ${JSON.stringify(opts.devicesPerUser)}`);
  }
  const devicesPerUser = Number(opts.devicesPerUser);
  if (!/^([1-9]|1[0-6])$/.test(opts.numbers.trim())) throw new CliError(`--numbers must be an integer from 1 to 16, not ${JSON.stringify(opts.numbers)}`);
  const numbers = Number(opts.numbers);
  // Loaded only here: the bench pulls in the platform and the measuring code, which no other command needs.
  const { runBench } = await import('../../bench/bench.ts');
  const { medianOf, writeReport } = await import('../../bench/report.ts');
  const redisUrl = await redisFor(c);
  // Progress goes to stderr in both modes: stdout carries only the result (one JSON object with --json).
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const byWorkers = new Map<number, Awaited<ReturnType<typeof runBench>>[]>();
  for (const w of matrix) {
    const results = [];
    for (let i = 0; i < runs; i++) {
      log(`run ${i + 1}/${runs} with ${w} worker process(es)…`);
      results.push(await runBench({ redisUrl, messages, conversations, workers: w, log, platformInline: !!opts.platformInline, tracing: !!opts.tracing, devicesPerUser, numbers, ...(opts.profile ? { profileDir: opts.profile } : {}), ...(opts.latencyRate ? { latencyRate: Number(opts.latencyRate) } : {}) }));
    }
    byWorkers.set(w, results);
  }
  if (opts.matrix) {
    const command = `npm run bench -- --messages ${messages} --conversations ${conversations} --runs ${runs} --matrix ${matrix.join(',')}${opts.platformInline ? ' --platform-inline' : ''}${opts.tracing ? ' --tracing' : ''}${devicesPerUser > 1 ? ` --devices-per-user ${devicesPerUser}` : ''}${numbers !== 4 ? ` --numbers ${numbers}` : ''}`;
    writeReport(opts.out, command, byWorkers);
    log(`wrote ${opts.out}`);
  }
  const result = { ...medianOf(byWorkers.get(matrix[0]!)!), runs };
  process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : Object.entries(result).map(([k, v]) => `${k.padEnd(30)} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n') + '\n');
  process.exit(0);
}

/** `bench --group-members n`: the group bench (bench/groups.ts), medians of --runs. */
async function runGroupBenchCommand(opts: BenchOpts, messages: number, workers: number, runs: number): Promise<void> {
  const members = Number(opts.groupMembers);
  const groups = Number(opts.groups);
  if (!(Number.isInteger(members) && members >= 1 && members <= 8)) throw new CliError(`--group-members must be an integer from 1 to 8 (a group's participants), not ${JSON.stringify(opts.groupMembers)}`);
  if (!(Number.isInteger(groups) && groups >= 1 && groups <= 1000)) throw new CliError(`--groups must be an integer from 1 to 1000, not ${JSON.stringify(opts.groups)}`);
  if (!(workers >= 1)) throw new CliError('the group bench needs --workers 1 or more');
  const c = config(opts, true);
  const { runGroupBench } = await import('../../bench/groups.ts');
  const { medianOf } = await import('../../bench/report.ts');
  const redisUrl = await redisFor(c);
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const results = [];
  for (let i = 0; i < runs; i++) {
    log(`group bench run ${i + 1}/${runs}…`);
    results.push(await runGroupBench({ redisUrl, groups, members, messages, workers, log }));
  }
  const result = { ...medianOf(results as never), runs };
  process.stdout.write(opts.json ? JSON.stringify(result) + '\n' : Object.entries(result).map(([k, v]) => `${k.padEnd(36)} ${v}`).join('\n') + '\n');
  process.exit(0);
}
