/**
 * Conversations are hashed into a fixed number of shards. A shard has one wake-up job at a time (BullMQ,
 * deduplicated), a sorted set of its conversations with events waiting, and one of its durable timers: a
 * shard's drain serves every ready conversation of the shard, so under load one job and one claim serve many
 * events where each event cost a job of its own. Every process must use the same count (it is fixed here,
 * not configured, so that producers and workers of any version agree).
 */
export const SHARDS = 64;

/** Added to a ready score to put newly accepted sends behind every other kind of event in their shard. */
export const SENDS_LANE = 1e13;

/** The shard of a conversation (FNV-1a over the id's UTF-16 code units). */
export function shardOf(conversationId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < conversationId.length; i++) {
    h ^= conversationId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % SHARDS;
}
