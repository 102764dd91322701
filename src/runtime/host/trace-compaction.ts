import type { TraceLine } from '../../trace/format.ts';
import { snapshotBefore } from '../../trace/replay.ts';
import { readTraceLines } from '../../trace/store.ts';
import type { Loaded } from './loaded.ts';
import type { HostParts } from './parts.ts';

/**
 * The trace without its lines from before `cutoff` (they name messages whose retention ended); the new
 * first line carries the snapshot before it, so the shorter trace still replays. Null when nothing goes.
 */
export async function prunedTrace(h: HostParts, c: Loaded, cutoff: number, purgedIds: string[], pendingLines: string[]): Promise<string[] | null> {
  const stored = await readTraceLines(c.redis, h.keys.trace(c.id), c.id);
  const raw = [...stored, ...pendingLines.splice(0)];
  const all = raw.map((l) => JSON.parse(l) as TraceLine);
  // Everything up to the last line naming a deleted message goes, and everything older than the cutoff.
  let lastMention = -1;
  raw.forEach((l, i) => {
    if (purgedIds.some((id) => l.includes(id))) lastMention = i;
  });
  const afterCutoff = all.findIndex((l) => l.at > cutoff);
  // This step's own lines always stay: the kept trace must end where the snapshot is.
  const keepFrom = Math.min(Math.max(afterCutoff < 0 ? stored.length : afterCutoff, lastMention + 1), stored.length);
  if (keepFrom === 0) {
    pendingLines.push(...raw.slice(stored.length));
    return null;
  }
  let before: unknown;
  try {
    before = snapshotBefore(all, keepFrom);
  } catch {
    // The stored trace had already lost its start (bounded length): it cannot be made replayable again.
    before = undefined;
  }
  const kept = all.slice(keepFrom).map((l, i) => (i === 0 && before !== undefined ? { ...l, before } : l));
  return kept.map((l) => JSON.stringify(l));
}

/** The halved trace when this step crossed a check point and the trace reached half its bound; else null. */
export async function boundedTrace(h: HostParts, c: Loaded, seqBefore: number, pendingLines: string[]): Promise<string[] | null> {
  // The bound: once the stored trace holds half its bound in entries, its older half goes, the new first
  // line carrying the snapshot before it, so what is kept still replays from its start (commit.lua's
  // LTRIM at the full bound is only a backstop). Checked every few steps: one LLEN.
  const every = Math.max(1, Math.floor(h.traceMax / 8));
  if (Math.floor(c.traceSeq / every) === Math.floor(seqBefore / every)) return null;
  if ((await c.redis.llen(h.keys.trace(c.id))) + 1 < Math.max(2, Math.floor(h.traceMax / 2))) return null;
  return halvedTrace(h, c, pendingLines);
}

/**
 * The stored trace plus this step's lines, its older half dropped and the snapshot before the first kept
 * line attached to it (`before`), so the kept trace replays; null (nothing changed) when the stored trace
 * cannot be replayed from its start any more.
 */
async function halvedTrace(h: HostParts, c: Loaded, pendingLines: string[]): Promise<string[] | null> {
  const stored = await readTraceLines(c.redis, h.keys.trace(c.id), c.id);
  const all = [...stored, ...pendingLines].map((l) => JSON.parse(l) as TraceLine);
  const keepFrom = Math.floor(stored.length / 2);
  if (keepFrom === 0) return null;
  let before: unknown;
  try {
    before = snapshotBefore(all, keepFrom);
  } catch {
    return null;
  }
  pendingLines.splice(0);
  return all.slice(keepFrom).map((l, i) => JSON.stringify(i === 0 ? { ...l, before } : l));
}
