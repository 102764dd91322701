import { createHash } from 'node:crypto';

/**
 * Every Redis key Sealpost writes, in one place. Keys of one conversation share the hash tag
 * `{c:<conversationId>}` so the atomic commit (one Lua call) works on Redis Cluster.
 */
export class Keys {
  constructor(readonly prefix: string) {}

  /** BullMQ's `prefix` option: queue keys start with the Sealpost prefix too. */
  get bullPrefix(): string {
    return `${this.prefix}:q`;
  }

  /**
   * A queue name carrying its own hash tag, so each queue's keys live in one cluster slot (and different
   * queues spread over nodes). BullMQ forbids ':' in names; the key prefix is in {@link bullPrefix}.
   */
  queueName(kind: 'conversations' | 'outbound' | 'timers' | 'webhooks' | 'inbound' | 'groups'): string {
    return `{${kind}}`;
  }

  // --- businesses, phone numbers, tokens -------------------------------------------------------
  /** Set of all business ids. */
  get businesses(): string { return `${this.prefix}:businesses`; }
  /** Hash: one business's settings (secrets sealed). */
  business(businessId: string): string { return `${this.prefix}:biz:${businessId}`; }
  /** The business's data key, wrapped by the master key. */
  dataKey(businessId: string): string { return `${this.prefix}:biz:${businessId}:dk`; }
  /** Hash: one business phone number (routing data and its Signal identity, private part sealed). */
  phoneNumber(phoneNumberId: string): string { return `${this.prefix}:pn:${phoneNumberId}`; }
  /** Set of all phone_number_ids (the key publisher walks it). */
  get phoneNumbers(): string { return `${this.prefix}:numbers`; }
  /** Hash: the number's private prekeys (sealed) and their counters. */
  preKeys(phoneNumberId: string): string { return `${this.prefix}:pn:${phoneNumberId}:pk`; }
  /** Set: last-resort prekey uses seen (replay guard). */
  lastResortUsed(phoneNumberId: string): string { return `${this.prefix}:pn:${phoneNumberId}:lru`; }
  /** String: the lock one process holds while publishing the number's keys. */
  publishLock(phoneNumberId: string): string { return `${this.prefix}:pn:${phoneNumberId}:publock`; }
  /** String: display phone number digits → phone_number_id (routes transport events). */
  displayNumber(digits: string): string { return `${this.prefix}:pnd:${digits}`; }
  /** Set: the SHA-256 hashes of a business's access tokens. */
  businessTokens(businessId: string): string { return `${this.prefix}:biz:${businessId}:tokens`; }
  /** Hash: an access token, by the SHA-256 of the token (the token itself is never stored). */
  token(tokenHash: string): string { return `${this.prefix}:tok:${tokenHash}`; }

  // --- conversations -----------------------------------------------------------------------------
  private conv(id: string): string { return `${this.prefix}:{c:${id}}`; }
  /** Sealed actor snapshot plus its version. */
  snapshot(id: string): string { return `${this.conv(id)}:snap`; }
  /** Sealed conversation metadata: who the conversation is with (phone_number_id, wa_id). */
  meta(id: string): string { return `${this.conv(id)}:meta`; }
  /** Sealed Signal session record and remote identity. */
  session(id: string): string { return `${this.conv(id)}:sess`; }
  /** List: FIFO mailbox of events waiting for the actor. */
  mailbox(id: string): string { return `${this.conv(id)}:mbox`; }
  /** List: commands committed but maybe not yet executed (the transactional outbox). */
  outbox(id: string): string { return `${this.conv(id)}:outbox`; }
  /** List: the conversation's trace, JSON Lines, bounded. */
  trace(id: string): string { return `${this.conv(id)}:trace`; }
  /** Sorted set: the conversation's messages by the time their retention ends. */
  retention(id: string): string { return `${this.conv(id)}:ret`; }
  /** Sorted set: conversations by when their newest message's retention ends (the sweeper's index). */
  get expiries(): string { return `${this.prefix}:expiries`; }
  /** String: the single-writer lease token. */
  lease(id: string): string { return `${this.conv(id)}:lease`; }
  /** Hash: one message row (sealed body, Signal ciphertext for retransmission, status). */
  message(id: string, wamid: string): string { return `${this.conv(id)}:m:${wamid}`; }
  /** List: a business's pending webhook updates, delivered in order, batched. */
  webhookOutbox(businessId: string): string { return `${this.prefix}:{w:${businessId}}:out`; }
  /** String: the token of whoever delivers the business's webhooks now (a worker's direct delivery or a webhooks job), with a TTL. */
  webhookLock(businessId: string): string { return `${this.prefix}:{w:${businessId}}:lock`; }
  /** Hash: one business's aggregate counters for one day (no user identifiers). */
  stats(businessId: string, day: string): string { return `${this.prefix}:stats:${businessId}:${day}`; }
  /**
   * String with a 24-hour TTL: the customer-service window is open. Named by a digest of the conversation id,
   * so it outlives the conversation's deletion (a short retention must not shorten the window) without naming it.
   */
  window(conversationId: string): string {
    return `${this.prefix}:win:${createHash('sha256').update(`win|${conversationId}`).digest('hex').slice(0, 32)}`;
  }
  // --- shards: conversations hashed into a fixed number of shards (src/runtime/shards.ts) -----------------
  private shard(shard: number): string { return `${this.prefix}:{s:${shard}}`; }
  /**
   * Sorted set: the shard's conversations with events waiting and no drain claimed yet, by when they became
   * ready (newly accepted sends a lane later, so they go after receipts, replies and timers).
   */
  shardReady(shard: number): string { return `${this.shard(shard)}:ready`; }
  /** Sorted set: the shard's conversations claimed by a drain, by when they count as abandoned (crashed drain). */
  shardClaimed(shard: number): string { return `${this.shard(shard)}:claimed`; }
  /** String: set while the shard has a wake-up waiting in the wake list (`e`, or `s` for the sends lane): marks push none then. */
  shardAwake(shard: number): string { return `${this.shard(shard)}:awake`; }
  /** String in the shared store: when the last sweep of the shards began (ms): whose turn is next (src/runtime/shard-runner.ts). */
  sweepTurn(): string { return `${this.prefix}:sweep`; }
  /**
   * List in the shared store: wake-ups of shards (src/runtime/wake-list.ts) waiting for a worker process, one
   * list per lane, both under one hash tag so a worker blocks on the two at once (events before sends).
   */
  wakeList(lane: 'events' | 'sends'): string { return `${this.prefix}:{wake}:${lane === 'sends' ? 's' : 'e'}`; }
  /** Sorted set: the shard's durable timers (`<conversation id> <timer id>`) by due time. */
  shardTimers(shard: number): string { return `${this.shard(shard)}:timers`; }
  /** Hash: the mailbox event each of the shard's timers posts when due. */
  shardTimerEvents(shard: number): string { return `${this.shard(shard)}:tev`; }
  /** Hash in the shared store: conversation id → region, for conversations of region-pinned businesses. */
  get conversationRegions(): string { return `${this.prefix}:convregion`; }
  /** String "tokens:at": a business number's throughput bucket (its pair buckets share its hash tag). */
  throughputBucket(phoneNumberId: string): string { return `${this.prefix}:rl:{n:${phoneNumberId}}:tp`; }
  /** String "tokens:at": the pair limit's bucket of one conversation (or group) of a business number. */
  pairBucket(phoneNumberId: string, pairId: string): string { return `${this.prefix}:rl:{n:${phoneNumberId}}:pair:${pairId}`; }
  /** String: inbound message id → conversation id. */
  messageIndex(wamid: string): string { return `${this.prefix}:wm:${wamid}`; }
  /** Media received in a conversation (deleted with it: an erase or the end of its retention). */
  conversationMedia(id: string): string { return `${this.conv(id)}:media`; }
  /** An uploaded or received media file (sealed bytes and details). */
  media(id: string): string { return `${this.prefix}:media:${id}`; }
  /** Sorted set: a business's stored media ids by when they expire (its media quota; one slot with {@link mediaSizes}). */
  mediaExpiries(businessId: string): string { return `${this.prefix}:{mq:${businessId}}:exp`; }
  /** Hash: a business's stored media sizes by id, their total in field `t` (its media quota). */
  mediaSizes(businessId: string): string { return `${this.prefix}:{mq:${businessId}}:size`; }
  /** Which business owns a media id (routing data, in the shared store). */
  mediaOwner(id: string): string { return `${this.prefix}:mediaowner:${id}`; }
  /** Which business and number own a group id (routing data, in the shared store): `<business_id> <phone_number_id>`. */
  groupOwner(groupId: string): string { return `${this.prefix}:groupowner:${groupId}`; }
  /** Hash: one group of a business (`v` a version for compare-and-set, `d` the sealed record). */
  group(businessId: string, groupId: string): string { return `${this.prefix}:{g:${businessId}}:grp:${groupId}`; }
  /** Sorted set: a business number's group ids by creation time (ms). */
  numberGroups(businessId: string, phoneNumberId: string): string { return `${this.prefix}:{g:${businessId}}:pn:${phoneNumberId}:groups`; }
  /** Hash: a group's actor (`v` version, `s` sealed snapshot, `k` sealed sender keys, `o` effects of the last commit not yet confirmed applied). */
  groupActor(businessId: string, groupId: string): string { return `${this.prefix}:{g:${businessId}}:gact:${groupId}`; }
  /** List: a group actor's mailbox (JSON events, ids and ciphertext only). */
  groupMailbox(businessId: string, groupId: string): string { return `${this.prefix}:{g:${businessId}}:gmb:${groupId}`; }
  /** A group actor's fenced single-writer lease (a random token). */
  groupLease(businessId: string, groupId: string): string { return `${this.prefix}:{g:${businessId}}:glease:${groupId}`; }
  /** List: a group actor's trace (JSON lines: events and commands, no content, no numbers). */
  groupTrace(businessId: string, groupId: string): string { return `${this.prefix}:{g:${businessId}}:gtr:${groupId}`; }
  /** Hash: one message of a group (sent: sealed body `c`, `bo`, `k`, `at`, ciphertext `ct`; received: envelope `e`, sealed content `i`). */
  groupMessage(businessId: string, groupId: string, id: string): string { return `${this.prefix}:{g:${businessId}}:gm:${groupId}:${id}`; }
  /** The business's sender key distribution message for one member of a group, sealed: `{"d": distribution id, "s": skdm}`. */
  groupMemberKey(businessId: string, groupId: string, conversationId: string): string { return `${this.prefix}:{g:${businessId}}:gsk:${groupId}:${conversationId}`; }
  /** Strikes against a client address (hashed) that sent bad tokens or oversized bodies, for one window. */
  abuse(clientHash: string): string { return `${this.prefix}:abuse:${clientHash}`; }
}
