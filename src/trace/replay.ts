import { isDeepStrictEqual } from 'node:util';
import { initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import type { Command, CommandBatch } from '../../machines/commands.ts';
import { conversationMachine } from '../../machines/conversation.ts';
import { groupMachine } from '../../machines/group.ts';
import type { GroupTraceLine, TraceLine } from './format.ts';

/** The outcome of a replay: every step matched, or the first one that did not. */
export type ReplayResult =
  | { ok: true; steps: number; conversations: number }
  | { ok: false; conversationId: string; seq: number; diff: string };

/** Raised for a trace that cannot be read; the message names the line. */
export class TraceFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TraceFormatError';
  }
}

/** Parses JSON Lines into trace lines (a conversation's, or a group actor's with `group_id`), checking the fields replay needs. */
export function parseTrace(text: string): TraceLine[] {
  const lines: TraceLine[] = [];
  text.split('\n').forEach((raw, i) => {
    if (!raw.trim()) return;
    let v: TraceLine;
    try {
      v = JSON.parse(raw) as TraceLine;
    } catch {
      throw new TraceFormatError(`line ${i + 1}: not JSON`);
    }
    const g = v as unknown as GroupTraceLine;
    // A group actor's line replays on the group machine; it is keyed by its group id.
    if (typeof g.group_id === 'string' && v.conversation_id === undefined) v = { ...v, conversation_id: `group:${g.group_id}` };
    if (typeof v.conversation_id !== 'string' || typeof v.seq !== 'number' || typeof v.event?.type !== 'string' ||
        typeof v.state !== 'string' || !Array.isArray(v.commands)) {
      throw new TraceFormatError(`line ${i + 1}: needs conversation_id (or group_id), seq, event.type, state and commands`);
    }
    lines.push(v);
  });
  return lines;
}

const show = (v: unknown) => JSON.stringify(v);

const isGroup = (l: TraceLine) => l.conversation_id.startsWith('group:');
/** The machine a trace line is of: a group actor's (`group_id`) or a conversation's. */
const machineOf = (l: TraceLine) => (isGroup(l) ? groupMachine : conversationMachine) as unknown as typeof conversationMachine;

/** Where a trace starts: the initial state (seq 1), or the snapshot its first line carries. */
function startOf(first: TraceLine): AnyMachineSnapshot {
  const machine = machineOf(first);
  if (first.before) return machine.resolveState(first.before as never) as unknown as AnyMachineSnapshot;
  if (first.seq !== 1) throw new Error(`trace starts at seq ${first.seq} without a "before" snapshot: replay needs seq 1 or one`);
  const input = first.input ?? (isGroup(first) ? { groupId: first.conversation_id.slice(6) } : { conversationId: first.conversation_id });
  return (initialTransition(machine, input as never) as unknown as [AnyMachineSnapshot])[0];
}

const commandsOfActions = (actions: { type: string; params?: unknown }[]): Command[] =>
  actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list);

/**
 * The persisted snapshot before `lines[index]`, replaying from the trace's start (for pruning a trace
 * without losing the ability to replay what is kept).
 */
export function snapshotBefore(lines: TraceLine[], index: number): unknown {
  let s = startOf(lines[0]!);
  for (const line of lines.slice(0, index)) {
    [s] = transition(conversationMachine, s as never, line.event as never) as unknown as [AnyMachineSnapshot];
  }
  return conversationMachine.getPersistedSnapshot(s as never);
}

/**
 * Re-runs each conversation's events on the pure machine, from its initial state, and compares the state and
 * the commands of every step with the recorded ones; stops at the first divergence.
 * @example const r = replayTrace(parseTrace(readFileSync('t.jsonl', 'utf8'))); if (!r.ok) console.log(r.diff);
 */
export function replayTrace(lines: TraceLine[]): ReplayResult {
  const byConv = new Map<string, TraceLine[]>();
  for (const l of lines) byConv.set(l.conversation_id, [...(byConv.get(l.conversation_id) ?? []), l]);
  let steps = 0;
  for (const [conversationId, convLines] of byConv) {
    convLines.sort((a, b) => a.seq - b.seq);
    const first = convLines[0]!;
    let s: AnyMachineSnapshot;
    try {
      s = startOf(first);
    } catch (e) {
      return { ok: false, conversationId, seq: first.seq, diff: (e as Error).message };
    }
    for (const line of convLines) {
      const [next, actions] = transition(machineOf(line), s as never, line.event as never) as unknown as [AnyMachineSnapshot, { type: string; params?: unknown }[]];
      s = next;
      const commands = commandsOfActions(actions);
      const state = String(next.value);
      steps++;
      if (state !== line.state || !isDeepStrictEqual(commands, line.commands)) {
        const out = [`${isGroup(line) ? `group ${conversationId.slice(6)}` : `conversation ${conversationId}`}, step seq ${line.seq}: event ${show(line.event)}`];
        if (state !== line.state) out.push(`  state    expected ${show(line.state)}`, `           actual   ${show(state)}`);
        if (!isDeepStrictEqual(commands, line.commands)) {
          const n = Math.max(commands.length, line.commands.length);
          for (let i = 0; i < n; i++) {
            if (!isDeepStrictEqual(commands[i], line.commands[i])) {
              out.push(`  command #${i + 1}`, `    - expected ${show(line.commands[i] ?? '(none)')}`, `    + actual   ${show(commands[i] ?? '(none)')}`);
            }
          }
        }
        return { ok: false, conversationId, seq: line.seq, diff: out.join('\n') };
      }
    }
  }
  return { ok: true, steps, conversations: byConv.size };
}
