import type { Command, CommandBatch } from '../../../machines/commands.ts';
import type { ConversationContext, ConversationEvent } from '../../../machines/conversation.ts';
import { seal } from '../../store/sealer.ts';
import type { TraceLine } from '../../trace/format.ts';
import { SERVICE_WINDOW_MS } from '../ports.ts';
import { commit } from './commit.ts';
import { inputOf } from './load.ts';
import { keyTtlMs, ROW_BACKSTOP_MS, type Loaded, type RowOp, type StatusCommand } from './loaded.ts';
import { decrypt, encrypt, fetchBundle, PRIMARY } from './local-commands.ts';
import type { HostParts } from './parts.ts';
import { boundedTrace, prunedTrace } from './trace-compaction.ts';
import { CIPHERTEXT_FIELDS } from './device-envelopes.ts';

const commandsOf = (actions: { type: string; params?: unknown }[]): Command[] =>
  actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list);

/**
 * Runs events through the machine (local commands such as encrypt are executed at once and their results
 * fed back), then commits. Returns the effects to execute after the commit.
 */
export async function step(h: HostParts, c: Loaded, events: ConversationEvent[], mailboxCount: number, token: string): Promise<Command[]> {
  const queue = [...events];
  const effects: Command[] = [];
  const rowOps = new Map<string, RowOp>();
  const traceLines: string[] = [];
  // The step's lines as made (pruning may move them into a rewritten trace), for the trace tap.
  const tapLines: string[] = [];
  const rowOp = (wamid: string) => {
    let op = rowOps.get(wamid);
    if (!op) rowOps.set(wamid, (op = { wamid }));
    return op;
  };
  const metaSet: Record<string, string> = {};
  const indexes: string[] = [];
  const retained: [number, string][] = [];
  const purged: string[] = [];
  let traceReset: string[] | null = null;
  let deleteAll = false;
  const pendingPurges: number[] = [];
  let eraseWindow = false;
  const untilBefore = (c.snapshot.context as ConversationContext).retentionUntil;
  const seqBefore = c.traceSeq;
  // Messages encrypted in this step: a 409/410 that answers a send made before that encryption is stale (the
  // first such refusal in a batch of results has every message encrypted again for the devices the list names
  // now), and is not the machine's concern.
  const encryptedHere = new Set<string>();
  while (queue.length) {
    const event = queue.shift()!;
    if (event.type === 'TRANSPORT_REJECTED' && event.reason === 'devices' && encryptedHere.has(event.wamid)) continue;
    const [next, actions] = h.transition(c.snapshot, event);
    c.snapshot = next;
    const commands = commandsOf(actions);
    c.traceSeq += 1;
    const line: TraceLine = {
      conversation_id: c.id,
      seq: c.traceSeq,
      at: event.at,
      event,
      state: next.value as string,
      commands,
      ...(c.traceSeq === 1 ? { input: inputOf(h, c.id, c.retentionMs) } : {}),
    };
    traceLines.push(JSON.stringify(line));
    if (h.tap()) tapLines.push(traceLines.at(-1)!);
    const results: ConversationEvent[] = [];
    for (const cmd of commands) {
      switch (cmd.type) {
        case 'bundle.fetch':
          results.push(await fetchBundle(h, c, event.at));
          break;
        case 'message.encrypt':
          encryptedHere.add(cmd.wamid);
          results.push(await encrypt(h, c, cmd, event.at, rowOp(cmd.wamid), (c.snapshot.context as ConversationContext).messages.find((m) => m.wamid === cmd.wamid)));
          break;
        case 'inbound.store': {
          const row = c.inbound.get(cmd.id);
          if (!row) break;
          const rowKey = h.keys.message(c.id, cmd.id);
          const op = rowOp(cmd.id);
          op.set = { c: seal(c.dk, JSON.stringify(row), `${rowKey}:c`), in: '1', at: String(cmd.at) };
          op.made = true;
          metaSet.li = String(cmd.at);
          indexes.push(cmd.id);
          retained.push([cmd.at + c.retentionMs, cmd.id]);
          break;
        }
        case 'store.purge': {
          // A message still owed (its failure not yet reported) keeps its row until that is done; the
          // sweeper wakes the conversation again afterwards.
          const owed = new Set((c.snapshot.context as ConversationContext).messages.map((m) => m.wamid));
          for (const id of await c.redis.zrangebyscore(h.keys.retention(c.id), '-inf', String(cmd.upTo))) {
            if (owed.has(id)) continue;
            rowOp(id).drop = true;
            purged.push(id);
          }
          traceReset = await prunedTrace(h, c, cmd.upTo - c.retentionMs, purged, traceLines);
          break;
        }
        case 'conversation.delete': {
          if (cmd.erase) eraseWindow = true;
          const entries = await c.redis.zrange(h.keys.retention(c.id), '0', '-1', 'WITHSCORES');
          for (let i = 0; i < entries.length; i += 2) {
            rowOp(entries[i]!).drop = true;
            pendingPurges.push(Number(entries[i + 1]));
          }
          const until = (c.snapshot.context as ConversationContext).retentionUntil;
          if (until) pendingPurges.push(until);
          deleteAll = true;
          break;
        }
        case 'envelope.decrypt':
          results.push(await decrypt(h, c, cmd.id, event.at));
          break;
        case 'session.archive':
          c.crypto.archive(cmd.device ?? PRIMARY);
          break;
        case 'message.forget': {
          const op = rowOp(cmd.wamid);
          op.del = ['c', ...CIPHERTEXT_FIELDS];
          // Ciphertexts made earlier in this step are not written at all.
          if (op.set) for (const f of CIPHERTEXT_FIELDS) delete op.set[f];
          c.ciphertexts.delete(cmd.wamid);
          // An outbound row read at encryption: what is left of it is known, so it is written afresh (compact)
          // with the TTL backstop it got when accepted.
          const info = c.rowInfo.get(cmd.wamid);
          if (info?.at) {
            const fields: Record<string, string> = { at: info.at, ...(info.k ? { k: info.k } : {}), ...(info.bo ? { bo: info.bo } : {}), ...(info.tp ? { tp: info.tp } : {}), ...op.set };
            op.rewrite = { fields, expireAt: Number(info.at) + c.retentionMs + ROW_BACKSTOP_MS };
          }
          break;
        }
        default:
          effects.push(cmd);
      }
    }
    // Results of local commands are the next events, ahead of the rest of the batch.
    queue.unshift(...results);
  }
  // The bound (see boundedTrace): not when this step already rewrites the trace, or deletes it.
  if (!traceReset && !deleteAll) traceReset = await boundedTrace(h, c, seqBefore, traceLines);
  await keepRowsForStatuses(h, c, effects, rowOps, deleteAll);
  if (deleteAll) {
    await commit(h, c, token, mailboxCount, effects, [], [...rowOps.values()], {}, { deleteAll: true });
    h.tap()?.(c.id, tapLines);
    c.deleted = true;
    await afterDelete(h, c, [...rowOps.keys()]);
    // An erase takes the open service window with it; a retention end leaves it to its own 24 hours.
    if (eraseWindow) await c.redis.del(h.keys.window(c.id));
    await h.sinks.cancelPurges(c.id, pendingPurges, c.retentionMs);
    return effects;
  }
  await commit(h, c, token, mailboxCount, effects, traceLines, [...rowOps.values()], metaSet, { retained, purged, traceReset });
  h.tap()?.(c.id, tapLines);
  for (const f of c.afterCommit.splice(0)) await f();
  // Index entries live in other slots than the conversation (one per message id): written key by key.
  if (purged.length) await Promise.all(purged.map((id) => c.redis.del(h.keys.messageIndex(id))));
  const untilAfter = (c.snapshot.context as ConversationContext).retentionUntil;
  if (untilAfter !== null && untilAfter !== untilBefore) {
    // The sweeper's index, and the deletion job for the newest message's retention end.
    await c.redis.zadd(h.keys.expiries, 'GT', untilAfter, c.id);
  }
  for (const [until] of retained) await h.sinks.purgeAt(c.id, until, c.retentionMs);
  if (metaSet.li) await c.redis.set(h.keys.window(c.id), metaSet.li, 'PX', SERVICE_WINDOW_MS);
  if (indexes.length) {
    // Inbound ids → conversation, so mark-as-read finds it; written after the commit (another slot).
    // NX: the first conversation to store an id keeps it (two devices racing with one id cannot move it).
    await Promise.all(indexes.map((id) => c.redis.set(h.keys.messageIndex(id), JSON.stringify({ c: c.id, b: c.meta.businessId }), 'PX', keyTtlMs(c), 'NX')));
  }
  return effects;
}

/**
 * A status whose message row this very step deletes (its TTL and its retention ended together: at day 30 by
 * default) takes what it reports from the row with it, read before the commit: the callback data (still
 * sealed, bound to the row's key), the kind and the accept time travel in the outbox, so the failed status
 * carries them even when the effects run after the row is gone, or again after a crash.
 */
async function keepRowsForStatuses(h: HostParts, c: Loaded, effects: Command[], rowOps: Map<string, RowOp>, deleteAll: boolean): Promise<void> {
  for (const [i, e] of effects.entries()) {
    if (e.type !== 'webhook.status' || !(deleteAll || rowOps.get(e.wamid)?.drop)) continue;
    const [bo, k, at] = await c.redis.hmget(h.keys.message(c.id, e.wamid), 'bo', 'k', 'at');
    const kept: StatusCommand = { ...e, row: { ...(bo ? { bo } : {}), ...(k ? { k } : {}), ...(at ? { at } : {}) } };
    effects[i] = kept;
  }
}

/** After a conversation was deleted: its index entries and its place in the sweeper's index go too. */
async function afterDelete(h: HostParts, c: Loaded, messageIds: string[]): Promise<void> {
  // Files the user sent in this conversation go with it.
  const media = await c.redis.smembers(h.keys.conversationMedia(c.id));
  if (media.length && h.media) await h.media.deleteIds(c.meta.businessId, media);
  await c.redis.del(h.keys.conversationMedia(c.id));
  // Keys in several slots (the sweeper's index, the mailbox, one index entry per message): key by key.
  await Promise.all([c.redis.zrem(h.keys.expiries, c.id), c.redis.del(h.keys.mailbox(c.id)), ...messageIds.map((id) => c.redis.del(h.keys.messageIndex(id)))]);
  await h.stores.unpin(c.id);
}
