import type { GroupTraffic } from './runtime/transport-puller.ts';
import type { GroupMailboxEvent } from './runtime/group-host.ts';
import { conversationId, isWamidShaped } from './runtime/ids.ts';
import { maskPhone } from './log.ts';
import type { Job, Worker } from 'bullmq';
import { MAX_RETENTION_MS } from './store/businesses.ts';
import { metrics } from './ops/metrics.ts';
import { ActorHost, type HostSinks } from './runtime/actor-host.ts';
import type { RouterContext } from './runtime/router.ts';
import { RetentionSweeper } from './runtime/retention-sweeper.ts';
import { ShardRunner } from './runtime/shard-runner.ts';
import { SHARDS } from './runtime/shards.ts';
import { TransportPuller } from './runtime/transport-puller.ts';
import { cancelPurges, schedulePurge } from './queues/timers.ts';
import { ShardTimers } from './runtime/shard-timers.ts';
import { egressFetch } from './webhook/egress.ts';
import { startConversationWorker } from '../workers/conversation.ts';
import { startOutboundWorker } from '../workers/outbound.ts';
import { startTimerWorker } from '../workers/timers.ts';
import { startWebhookWorker } from '../workers/webhook.ts';
import { startGroupWorker } from '../workers/group.ts';

/**
 * The composition root of the worker side: it builds the actor host and starts every queue's worker, the
 * transport puller, the key publisher and the retention sweeper over a {@link RouterContext}. It sits above
 * src/runtime and workers/, which never import each other's way up: runtime knows queues only as producers
 * (src/queues), workers know the runtime they drive.
 */

/** A finished job's processing time and how long it waited past its due time, per queue. */
function observeJob(queue: string, job: Job): void {
  if (job.processedOn && job.finishedOn) metrics.jobSeconds.observe({ queue }, Math.max(0, job.finishedOn - job.processedOn) / 1000);
  if (job.processedOn) metrics.jobWaitSeconds.observe({ queue }, Math.max(0, job.processedOn - job.timestamp - (job.delay ?? 0)) / 1000);
}

/** Where the host's effects go: webhooks to the outbox, timers to their shards, counts to statistics. */
function sinksFor(ctx: RouterContext, timers: ShardTimers): HostSinks {
  return {
    async webhook(businessId, phoneNumberId, values, traces) {
      await ctx.webhooks.enqueue(businessId, phoneNumberId, values, ctx.config.webhookMaxAgeMs + 86_400_000, traces);
    },
    async timer(conversationId, timerId, at, event) {
      await timers.schedule(conversationId, timerId, at, event);
    },
    async cancelTimer(conversationId, timerId) {
      await timers.cancel(conversationId, timerId);
    },
    async count(businessId, fields) {
      await ctx.stats.count(businessId, fields);
    },
    async purgeAt(conversationId, until, retentionMs) {
      await schedulePurge(ctx.queues.timers, conversationId, until, retentionMs);
    },
    async cancelPurges(conversationId, untils, retentionMs) {
      await cancelPurges(ctx.queues.timers, conversationId, untils, retentionMs);
    },
    async group(businessId, groupId, event) {
      await ctx.groupHost.post(businessId, groupId, [event]);
    },
  };
}

/** The running worker side of a process: conversation actors, timers, webhooks and the transport puller. */
export interface RunningWorkers {
  host: ActorHost;
  puller: TransportPuller;
  close(): Promise<void>;
}

/** Starts every worker of the router in this process. */
export function startWorkers(ctx: RouterContext, opts: { pull?: boolean } = {}): RunningWorkers {
  const { config, keys, connection } = ctx;
  const prefix = keys.bullPrefix;
  // A mailbox only holds events until the next drain: its TTL is a backstop, as long as any business's
  // retention may be (a business may keep messages longer than this process's default).
  const mailboxTtlMs = MAX_RETENTION_MS + 86_400_000;
  const shardTimers = new ShardTimers(ctx.stores, keys, ctx.queues.timers, ctx.mailboxes, mailboxTtlMs, ctx.log.child({ component: 'timers' }));
  const host = new ActorHost(ctx.stores, keys, ctx.dataKeys, ctx.businesses, ctx.transport, sinksFor(ctx, shardTimers), ctx.log.child({ component: 'actor-host' }), {
    retentionMs: config.retentionMs,
    bundleRetryMs: config.bundleRetryMs,
    retransmitBaseMs: config.retransmitBaseMs,
    retransmitMaxMs: config.retransmitMaxMs,
    leaseMs: config.leaseMs,
  }, (pnid) => ctx.publisher.preKeysOf(pnid));
  host.useMedia(ctx.media);
  // Shards' wake-ups: each drains its shard's ready conversations, several at once.
  const runner = new ShardRunner(ctx.stores, keys, host, ctx.mailboxes, ctx.log.child({ component: 'shards' }), {
    leaseMs: config.leaseMs,
    perShard: config.shardDrains,
    // A shard whose tick job was lost: its due timers fire from the sweep.
    onTimersDue: async (shard, region) => void (await shardTimers.fire(shard, region)),
  });
  const conversations = startConversationWorker({
    connection, prefix, queueName: keys.queueName('conversations'), shared: ctx.stores.shared, keys, runner,
    concurrency: Math.min(SHARDS, config.workerConcurrency), log: ctx.log,
  });
  runner.startSweeping(1000);
  const timers = startTimerWorker({ connection, prefix, queueName: keys.queueName('timers'), mailboxes: ctx.mailboxes, timers: shardTimers, mailboxTtlMs, log: ctx.log });
  const webhooks = startWebhookWorker({
    connection, storeOf: (b: string) => ctx.stores.forBusiness(ctx.businesses, b), keys, dataKeyOf: (b: string) => ctx.dataKeys.get(b), prefix, queueName: keys.queueName('webhooks'),
    resolveTarget: (businessId: string, phoneNumberId: string) => ctx.businesses.webhookTarget(businessId, phoneNumberId),
    concurrency: config.webhookConcurrency,
    backoff: { baseMs: config.webhookBackoffBaseMs, maxMs: config.webhookBackoffMaxMs, maxAgeMs: config.webhookMaxAgeMs },
    timeoutMs: config.webhookTimeoutMs,
    maxBatch: config.webhookBatch,
    // Refused private targets are refused on every connection too: a name may resolve elsewhere tomorrow.
    ...(config.webhookDenyPrivate ? { fetchImpl: egressFetch(true) } : {}),
  });
  // What this process's drains append for a business's webhook is delivered from here at once (a job each
  // cost ~60 Redis commands when nothing coalesces); the webhooks queue keeps a delayed job as the safety net.
  ctx.webhooks.deliverDirectly((businessId) => webhooks.deliverNow(businessId));
  const groups = startGroupWorker({ connection, prefix, queueName: keys.queueName('groups'), host: ctx.groupHost, concurrency: 8, log: ctx.log });
  const outbound = startOutboundWorker({
    connection, prefix, queueName: keys.queueName('outbound'), businesses: ctx.businesses, outbound: ctx.outbound, log: ctx.log.child({ component: 'outbound-queue' }),
  });
  for (const [queue, w] of [['conversations', conversations.worker], ['timers', timers], ['webhooks', webhooks.worker], ['outbound', outbound], ['groups', groups]] as const) {
    (w as Worker).on('completed', (job: Job) => observeJob(queue, job));
    (w as Worker).on('failed', (job: Job | undefined) => {
      metrics.jobFailures.inc({ queue });
      if (job) observeJob(queue, job);
    });
  }
  const puller = new TransportPuller(ctx.transport, ctx.businesses, ctx.dataKeys, ctx.mailboxes, ctx.outbound, ctx.log.child({ component: 'puller' }), mailboxTtlMs);
  // The transport's word on a number's standing: recorded on the number (GET /{phone_number_id}, 368 at the
  // API while blocked) and told to the business as Meta does, with a phone_number_quality_update webhook.
  puller.onIntegrity = async (ev) => {
    const pn = await ctx.businesses.phoneNumberByDisplay(ev.to);
    if (!pn) return;
    await ctx.businesses.setIntegrity(pn.phone_number_id, { quality_rating: ev.quality_rating, messaging_limit_tier: ev.current_limit, blocked: ev.blocked });
    const value = { display_phone_number: pn.display_phone_number, event: ev.event, current_limit: ev.current_limit, quality_rating: ev.quality_rating };
    await ctx.webhooks.enqueue(pn.business_id, pn.phone_number_id, [{ other: { field: 'phone_number_quality_update', value } }], config.webhookMaxAgeMs + 86_400_000);
    ctx.log.info({ phone_number_id: pn.phone_number_id, event: ev.event, quality_rating: ev.quality_rating, current_limit: ev.current_limit }, 'phone number standing changed');
  };
  // Joins and leaves by users: the router is authoritative for membership (src/runtime/groups.ts).
  puller.onGroupEvent = (ev) => ctx.groups.onTransportEvent(ev);
  // Group traffic (receipts of group messages, members' messages) goes to the group's actor.
  puller.onGroupTraffic = (ev) => routeGroupTraffic(ctx, ev);
  if (opts.pull !== false) puller.start();
  ctx.publisher.start();
  const sweeper = new RetentionSweeper(ctx.stores, keys, ctx.mailboxes, ctx.log.child({ component: 'retention' }), mailboxTtlMs);
  sweeper.start(config.sweepEveryMs);
  return {
    host,
    puller,
    async close() {
      sweeper.stop();
      await puller.stop();
      await Promise.all([outbound.close(), conversations.close(), timers.close(), groups.close()]);
      // Drains that outlived their wake-up's loop (a slow conversation) finish before the process goes.
      await runner.close();
      // Last: the drains above may still have handed webhooks to this process's direct delivery.
      await ctx.webhooks.settle();
      await webhooks.close();
    },
  };
}

/**
 * Receipts for group messages and members' messages to groups: to each group's actor in one append, members
 * named by conversation id. Dropped (logged, masked) when the group is not the business number's.
 */
async function routeGroupTraffic(ctx: RouterContext, evs: GroupTraffic[]): Promise<void> {
  const byGroup = new Map<string, { business: string; number: string; events: GroupMailboxEvent[] } | null>();
  const at = Date.now();
  for (const ev of evs) {
    let entry = byGroup.get(ev.group_id);
    if (entry === undefined) {
      const owner = await ctx.groups.store.owner(ev.group_id);
      const pn = owner ? await ctx.businesses.phoneNumber(owner.phone_number_id) : null;
      entry = owner && pn && pn.display_phone_number.replace(/^\+/, '') === ev.to.replace(/^\+/, '') ? { business: owner.business_id, number: owner.phone_number_id, events: [] } : null;
      if (!entry) ctx.log.warn({ group_id: ev.group_id, to: maskPhone(ev.to) }, 'group traffic for an unknown group dropped');
      byGroup.set(ev.group_id, entry);
    }
    if (!entry) continue;
    const member = await conversationId(ctx.dataKeys, entry.business, entry.number, ev.from);
    const device = Number.isInteger(ev.device_id) && ev.device_id! > 0 ? ev.device_id! : 1;
    if (ev.kind === 'receipt') {
      if (ev.status === 'delivered') entry.events.push({ type: 'RECEIPT', wamid: ev.id, at, member, device });
    } else if (isWamidShaped(ev.id)) entry.events.push({ type: 'ENVELOPE', id: ev.id, at, member, body: ev.body });
  }
  await Promise.all([...byGroup].map(([g, e]) => (e && e.events.length ? ctx.groupHost.post(e.business, g, e.events) : undefined)));
}
