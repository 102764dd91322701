import type { Redis } from 'ioredis';
import type { Command } from '../../../machines/commands.ts';
import { conversationMachine } from '../../../machines/conversation.ts';
import { sealBinary } from '../../store/sealer.ts';
import { encodeTraceChunk } from '../../trace/store.ts';
import { readLuaScript } from '../lua/read-script.ts';
import { encodeSnapshot } from '../snapshot-codec.ts';
import { keyTtlMs, type Loaded, type RowOp } from './loaded.ts';
import type { HostParts } from './parts.ts';
import { encodeDeviceSessions } from '../../signal/device-sessions-codec.ts';

const COMMIT_LUA = readLuaScript('commit.lua');

/** How often a conversation's key TTLs are renewed by its commits (well under the day they exceed retention by). */
export const TTL_RENEW_MS = 3_600_000;

/** The lease was lost or the snapshot changed under us: nothing was committed; the job is retried. */
export class CommitConflictError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'CommitConflictError';
  }
}

/** Makes a Redis client able to run the actor's commit script (once per connection). */
export function defineCommitScript(r: Redis): void {
  r.defineCommand('sealpostCommit', { lua: COMMIT_LUA });
}

/** What a step commits besides its snapshot, session, outbox, trace and rows (see commit.lua's ARGV[13..16]). */
export interface CommitExtra {
  /** Retention entries to add: [when the message's retention ends, its id]. */
  retained?: [number, string][];
  /** Message ids whose retention ended, out of the retention index. */
  purged?: string[];
  /** The whole trace to keep before appending (pruned or halved); [] empties it, null keeps it. */
  traceReset?: string[] | null;
  /** Deletes the conversation instead of writing. */
  deleteAll?: boolean;
}

/**
 * Commits a step atomically with commit.lua, fenced by the lease token and the snapshot version; on success
 * the session is clean and `outbox` is what the outbox holds (besides the drain's netted timer commands).
 */
export async function commit(
  h: HostParts, c: Loaded, token: string, pops: number, outbox: Command[], trace: string[], rows: RowOp[], metaSet: Record<string, string> = {},
  extra: CommitExtra = {},
): Promise<void> {
  const snapKey = h.keys.snapshot(c.id);
  // The keys' TTL backstops (retention and a day) are renewed at most hourly: they then end at least 23 hours
  // after the deletion jobs would, and a commit spares three PEXPIREs (docs/performance.md).
  const now = Date.now();
  const renew = now - c.ttlRenewedAt >= TTL_RENEW_MS;
  const persisted = conversationMachine.getPersistedSnapshot(c.snapshot as never);
  const sealedSnap = encodeSnapshot(c.dk, c.id, persisted, `${snapKey}:s`);
  let sealedSession: Buffer | string = '';
  if (c.crypto.dirty) sealedSession = sealBinary(c.dk, Buffer.from(encodeDeviceSessions(c.crypto.snapshot())), `${h.keys.session(c.id)}:s`);
  const rowKeys = rows.map((r) => h.keys.message(c.id, r.wamid));
  const ops: Record<string, unknown>[] = rows.map((r, i) => ({
    k: i + 1, ...(r.drop ? { drop: true } : {}), ...(r.set ? { set: r.set } : {}), ...(r.del ? { del: r.del } : {}), ...(r.made ? { made: true } : {}),
    ...(r.rewrite ? { rewrite: r.rewrite.fields, until: r.rewrite.expireAt } : {}),
  }));
  if (Object.keys(metaSet).length) ops.push({ k: 0, set: metaSet });
  const keys = [
    snapKey, h.keys.lease(c.id), h.keys.mailbox(c.id), h.keys.session(c.id),
    h.keys.outbox(c.id), h.keys.trace(c.id), h.keys.meta(c.id), h.keys.retention(c.id), ...rowKeys,
  ];
  const args = [
    token, c.version, sealedSnap, String(c.traceSeq), sealedSession, String(pops),
    JSON.stringify([...c.timerOps, ...outbox]), trace.length ? encodeTraceChunk(c.id, trace) : '', String(h.traceMax),
    c.outboxStored ? '1' : '', String(keyTtlMs(c)), JSON.stringify(ops),
    JSON.stringify(extra.retained ?? []), JSON.stringify(extra.purged ?? []),
    extra.traceReset ? (extra.traceReset.length ? encodeTraceChunk(c.id, extra.traceReset) : '-') : '',
    extra.deleteAll ? '1' : '',
    renew ? String(now) : '',
  ];
  try {
    c.version = (await (c.redis as any).sealpostCommit(keys.length, ...keys, ...args)) as string;
  } catch (e) {
    const msg = (e as Error).message;
    if (msg.includes('LEASE_LOST') || msg.includes('VERSION_CONFLICT') || msg.includes('MAILBOX_MOVED')) throw new CommitConflictError(msg);
    throw e;
  }
  c.crypto.markClean();
  c.outboxStored = c.timerOps.length + outbox.length > 0;
  if (renew) c.ttlRenewedAt = now;
  c.outbox = outbox;
  c.stored = extra.deleteAll ? null : sealedSnap;
}
