import { describe, expect, it } from 'vitest';
import type { Command } from '../../machines/commands.ts';
import type { ConversationEvent } from '../../machines/conversation.ts';
import { activeStateIds, ALPHABETS, definitionStates, definitionTransitions, generatePaths, runPath, type ModelPath } from './model.ts';

type Status = 'sent' | 'delivered' | 'read' | 'failed';
const RANK: Record<Status, number> = { sent: 1, delivered: 2, read: 3, failed: 4 };

/**
 * Checks the invariants on every step of a path, then drives the conversation to quiescence (a timer firing
 * past every TTL) and checks every message ended delivered, failed or expired. Returns the states visited
 * and the transitions taken; throws a readable error naming the path and the step that broke an invariant.
 */
function check(path: ModelPath, visited: Set<string>, taken: Set<string>): void {
  const encrypted = new Set<string>();
  const status = new Map<string, Status>();
  const sentWamids = new Set<string>();
  let last: { after: { value: unknown; context: { messages: { wamid: string; skip?: true; read?: string[]; expiresAt: number }[]; timer: unknown } } } | undefined;
  const fail = (i: number, why: string) => {
    throw new Error(`[${path.alphabet}] step ${i + 1} of ${path.events.map((e) => e.type + ('wamid' in e ? `(${e.wamid})` : '')).join(' → ')}: ${why}`);
  };
  const apply = (i: number, event: ConversationEvent, after: { value: unknown }, commands: Command[]) => {
    if (event.type === 'SEND') sentWamids.add(event.wamid);
    if (event.type === 'ENCRYPTED') encrypted.add(event.wamid);
    for (const c of commands) {
      // Nothing is encrypted unless the step ends with an established session.
      if (c.type === 'message.encrypt' && after.value !== 'established') fail(i, `message.encrypt ${c.wamid} while ${JSON.stringify(after.value)}`);
      // Nothing is handed to the transport that was not encrypted first.
      if (c.type === 'transport.send' && !encrypted.has(c.wamid)) fail(i, `transport.send ${c.wamid} before it was encrypted`);
      if (c.type === 'webhook.status') {
        const prev = status.get(c.wamid);
        if (prev === 'failed') fail(i, `${c.status} reported for ${c.wamid} after failed`);
        // Monotonic: sent < delivered < read; a failure may follow sent, never delivered or read.
        if (c.status === 'failed' ? prev === 'delivered' || prev === 'read' : prev && RANK[c.status as Status] <= RANK[prev]) fail(i, `${c.status} reported for ${c.wamid} after ${prev}`);
        status.set(c.wamid, c.status as Status);
      }
    }
  };
  let i = 0;
  for (const step of runPath(path.events)) {
    for (const t of step.taken) taken.add(t);
    for (const id of activeStateIds(step.after)) visited.add(id);
    apply(i++, step.event, step.after, step.commands);
    last = step as never;
  }
  if (!last) return;
  // Quiescence: a timer firing after every TTL (plus one more for what the first re-planned).
  const farAt = Math.max(0, ...last.after.context.messages.map((m) => m.expiresAt)) + 1;
  const tail: ConversationEvent[] = [{ type: 'RETRANSMIT_DUE', at: farAt }, { type: 'RETRANSMIT_DUE', at: farAt + 1 }];
  let j = 0;
  let end: typeof last.after | undefined;
  for (const step of runPath([...path.events, ...tail])) {
    if (j++ < path.events.length) continue;
    apply(i++, step.event, step.after, step.commands);
    end = step.after as never;
  }
  const owed = end!.context.messages.filter((m) => !m.skip && !m.read);
  if (end!.value !== 'expired' && owed.length) fail(i, `messages still owed after every TTL: ${owed.map((m) => m.wamid).join(', ')}`);
  for (const w of sentWamids) {
    const s = status.get(w);
    if (end!.value !== 'expired' && s !== 'delivered' && s !== 'read' && s !== 'failed') fail(i, `${w} ended without delivered, read or failed (last: ${s ?? 'none'})`);
  }
}

/** What checking one alphabet's paths found: how many paths, and the states and transitions they covered. */
interface Checked {
  paths: number;
  visited: Set<string>;
  taken: Set<string>;
}

/**
 * Generates and checks one alphabet's paths, once per run: each alphabet's test and the coverage test share
 * the result, and the coverage test computes whatever no earlier test did, so it also holds when run alone.
 */
const checkedAlphabets = new Map<string, Checked>();
function checkAlphabet(name: string): Checked {
  let done = checkedAlphabets.get(name);
  if (!done) {
    const { events, limit } = ALPHABETS[name]!;
    const generated = generatePaths(name, events, limit);
    expect(generated.length, `${name}: generated paths`).toBeGreaterThan(10);
    done = { paths: generated.length, visited: new Set(), taken: new Set() };
    for (const p of generated) check(p, done.visited, done.taken);
    checkedAlphabets.set(name, done);
  }
  return done;
}

describe('model-based: generated paths over the conversation machine', () => {
  for (const name of Object.keys(ALPHABETS)) {
    it(`${name}: invariants hold on every path`, () => {
      expect(checkAlphabet(name).paths).toBeGreaterThan(10);
    }, 120_000);
  }

  it('together the paths reach every state and take every transition of the definition', () => {
    const all = Object.keys(ALPHABETS).map(checkAlphabet);
    const visited = new Set(all.flatMap((c) => [...c.visited]));
    const taken = new Set(all.flatMap((c) => [...c.taken]));
    expect(all.reduce((n, c) => n + c.paths, 0)).toBeGreaterThan(100);
    const missingStates = definitionStates().filter((s) => !visited.has(s));
    const missingTransitions = definitionTransitions().filter((t) => !taken.has(t));
    expect(missingStates, 'states no generated path reached').toEqual([]);
    expect(missingTransitions, 'transitions no generated path took').toEqual([]);
  }, 240_000);
});
