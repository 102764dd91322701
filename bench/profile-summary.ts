/**
 * Where the CPU time went: summarises V8 CPU profiles (`.cpuprofile`, as written by `bench --profile DIR`
 * for the worker processes, or `node --cpu-prof` for the bench process itself) by component.
 *
 *   npx tsx bench/profile-summary.ts DIR [--per-message N]
 *
 * Self time of each sampled frame goes to the component its code belongs to (a package, a Sealpost source
 * folder, V8's garbage collector...); idle time is left out. With `--per-message N` each component is also
 * shown as milliseconds per message (N = the messages the profiled run handled).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string } }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** The component a frame's code belongs to. */
export function componentOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(garbage collector)') return 'V8 garbage collector';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(program)') return 'V8 / native (program)';
    if (/^write(Buffer|Utf8String|Latin1String|v)$/.test(functionName)) return 'socket writes (libuv)';
    if (functionName === 'runMicrotasks') return 'promise jobs (runMicrotasks)';
    return 'native (other)';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + 14).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.startsWith('node:')) {
    if (url.includes('zlib')) return 'node:zlib (trace/snapshot compression)';
    if (url.includes('crypto')) return 'node:crypto (sealing at rest)';
    if (url.includes('http') || url.includes('net') || url.includes('stream')) return 'node:http/net/streams';
    if (url.includes('buffer')) return 'node:buffer (copies, encoding)';
    if (url.includes('/modules/') || url.includes('bootstrap') || url.includes('lexer')) return 'module loading (start-up)';
    return 'node (events, timers, other internals)';
  }
  const m = /\/(src\/[^/]+|machines|workers|bench)\//.exec(url);
  if (m) return `sealpost ${m[1]}`;
  if (url.startsWith('wasm://')) return 'wasm (es-module-lexer)';
  return 'other';
}

/** Milliseconds of self time per component, idle excluded, over all the profiles given. */
export function summarise(profiles: Profile[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of profiles) {
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    for (let i = 0; i < p.samples.length; i++) {
      const n = byId.get(p.samples[i]!);
      if (!n) continue;
      const c = componentOf(n.callFrame.url, n.callFrame.functionName);
      if (c === '(idle)') continue;
      out.set(c, (out.get(c) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
    }
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: profile-summary DIR [--per-message N]');
    process.exit(2);
  }
  const i = process.argv.indexOf('--per-message');
  const perMessage = i > 0 ? Number(process.argv[i + 1]) : 0;
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const byComponent = summarise(files.map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Profile));
  const total = [...byComponent.values()].reduce((a, b) => a + b, 0);
  console.log(`| component | CPU ms | share |${perMessage ? ' ms per message |' : ''}`);
  console.log(`|---|---|---|${perMessage ? '---|' : ''}`);
  for (const [c, ms] of [...byComponent].sort((a, b) => b[1] - a[1])) {
    if (ms / total < 0.005) continue;
    console.log(`| ${c} | ${Math.round(ms)} | ${((100 * ms) / total).toFixed(1)} % |${perMessage ? ` ${(ms / perMessage).toFixed(3)} |` : ''}`);
  }
  console.log(`| **busy total** (${files.length} profiles) | ${Math.round(total)} | 100 % |${perMessage ? ` ${(total / perMessage).toFixed(3)} |` : ''}`);
}
