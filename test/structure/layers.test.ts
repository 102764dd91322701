import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The house rules of the code, checked on the source as it is: imports go down the layers, what a backend
 * imports to enqueue stays light, and files stay readable. A rule broken by a change fails here, naming the
 * file and the import that broke it.
 */
const ROOT = path.resolve(import.meta.dirname, '../..');

/** Every .ts file under a folder of the repo. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(ROOT, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** The imports of a file that load code at run time (`import type` and `export type` load nothing). */
function runtimeImports(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const specs: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm)) specs.push(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) specs.push(m[1]!);
  return specs;
}

/** A relative import as a repo path; a package stays its name. */
const resolve = (from: string, spec: string) => (spec.startsWith('.') ? path.normalize(path.join(path.dirname(from), spec)) : spec);

/** Everything a module loads, transitively, with the chain that leads to each. */
function closure(entry: string): Map<string, string[]> {
  const reached = new Map<string, string[]>([[entry, [entry]]]);
  const todo = [entry];
  while (todo.length) {
    const file = todo.pop()!;
    for (const spec of runtimeImports(file)) {
      const target = resolve(file, spec);
      if (reached.has(target)) continue;
      reached.set(target, [...reached.get(file)!, target]);
      if (target.endsWith('.ts') && existsSync(path.join(ROOT, target))) todo.push(target);
    }
  }
  return reached;
}

describe('structure', () => {
  it('src/index.ts, what a backend imports to enqueue, loads neither the actor host nor libsignal nor xstate', () => {
    const reached = closure('src/index.ts');
    const heavy = [...reached.entries()].filter(([m]) => m === '@signalapp/libsignal-client' || m === 'xstate' || m.startsWith('xstate/')
      || m === 'src/runtime/actor-host.ts' || m.startsWith('machines/') || m.startsWith('workers/'));
    expect(heavy.map(([, chain]) => chain.join(' -> '))).toEqual([]);
  });

  it('src/runtime never imports workers/, and workers/ never import src/api/', () => {
    const broken: string[] = [];
    for (const file of sources('src/runtime')) {
      for (const spec of runtimeImports(file)) if (resolve(file, spec).startsWith('workers/')) broken.push(`${file} imports ${spec}`);
    }
    for (const file of sources('workers')) {
      for (const spec of runtimeImports(file)) if (resolve(file, spec).startsWith('src/api/')) broken.push(`${file} imports ${spec}`);
    }
    expect(broken).toEqual([]);
  });

  it('no source file is over 500 lines, the machine definition aside', () => {
    const long = ['src', 'workers', 'machines', 'bench'].flatMap(sources)
      .filter((f) => f !== 'machines/conversation.ts')
      .map((f) => [f, readFileSync(path.join(ROOT, f), 'utf8').split('\n').length] as const)
      .filter(([, n]) => n > 500);
    expect(long.map(([f, n]) => `${f}: ${n} lines`)).toEqual([]);
  });

  it('the rules see what they check: a known import chain is found', () => {
    // Guards the checks above against passing vacuously (a pattern that no longer matches any import).
    expect(closure('src/compose.ts').has('workers/conversation.ts')).toBe(true);
    expect(runtimeImports('workers/outbound.ts')).toContain('../src/runtime/message-requests.ts');
  });
});
