import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseTrace, replayTrace } from '../../src/trace/replay.ts';

const dir = new URL('./', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort();

/** Recorded (and hand-written) traces are regression tests: today's machine must reproduce them step by step. */
describe('recorded traces replay on the current machine', () => {
  it('has traces to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
  });

  for (const file of files) {
    it(file, () => {
      const lines = parseTrace(readFileSync(new URL(file, dir), 'utf8'));
      expect(replayTrace(lines)).toMatchObject({ ok: true });
    });
  }

  it('a trace with one altered step fails at that step with a readable diff', () => {
    const lines = parseTrace(readFileSync(new URL('first-contact.jsonl', dir), 'utf8'));
    const altered = lines.map((l, i) => (i === 2 ? { ...l, commands: [...l.commands, { type: 'bundle.fetch' as const }] } : l));
    const result = replayTrace(altered);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.seq).toBe(lines[2]!.seq);
    expect(result.diff).toContain('- expected {"type":"bundle.fetch"}');
    expect(result.diff).toContain('+ actual   "(none)"');
  });
});
