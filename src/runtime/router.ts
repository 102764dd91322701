import { Queue, type ConnectionOptions, type Job, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullConnection, connectRedis, isCluster } from '../redis/connect.ts';
import { MediaStore } from '../media/store.ts';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { platformUrlOf } from '../config.ts';
import { createLogger } from '../log.ts';
import { BusinessStore, MAX_RETENTION_MS } from '../store/businesses.ts';
import { Keys } from '../store/keys.ts';
import { DataKeys } from '../store/sealer.ts';
import { Stats } from '../store/stats.ts';
import { ActorHost, defineCommitScript, type HostSinks } from './actor-host.ts';
import { Stores } from '../store/stores.ts';
import { RateLimits } from './rate-limits.ts';
import { Mailboxes, type WakeJob } from './mailbox.ts';
import { OutboundService } from './outbound-service.ts';
import { TransportClient } from './transport-client.ts';
import { TransportPuller } from './transport-puller.ts';
import { KeyPublisher } from './key-publisher.ts';
import { DataRequests } from './data-requests.ts';
import { RetentionSweeper } from './retention-sweeper.ts';
import { metrics } from '../ops/metrics.ts';
import { createOutboundQueue, startOutboundWorker, type OutboundJobData, type OutboundJobResult } from '../../workers/outbound.ts';
import { cancelPurges, cancelTimer, schedulePurge, scheduleTimer, startTimerWorker, type TimerJob } from '../../workers/timers.ts';
import { startConversationWorker } from '../../workers/conversation.ts';
import { egressFetch } from '../webhook/egress.ts';
import { createWebhookQueue, startWebhookWorker, WebhookOutbox, type WebhookJob } from '../../workers/webhook.ts';

/** Everything a Sealpost process shares: connections, stores, queues. Cheap to build; no worker runs yet. */
export interface RouterContext {
  config: Config;
  /** The shared store. */
  redis: Redis;
  /** The shared store and the regions' stores. */
  stores: Stores;
  connection: ConnectionOptions;
  keys: Keys;
  dataKeys: DataKeys;
  businesses: BusinessStore;
  mailboxes: Mailboxes;
  webhooks: WebhookOutbox;
  outbound: OutboundService;
  transport: TransportClient;
  publisher: KeyPublisher;
  stats: Stats;
  data: DataRequests;
  /** Uploaded and received media, sealed at rest, expiring with each business's retention. */
  media: MediaStore;
  queues: { conversations: Queue<WakeJob>; timers: Queue<TimerJob>; webhooks: Queue<WebhookJob>; outbound: Queue<OutboundJobData, OutboundJobResult> };
  log: Logger;
  close(): Promise<void>;
}

/** Opens the connections and builds the shared parts for a process of any role. */
export function createRouterContext(config: Config, redisUrl: string, masterKey: Buffer | Buffer[], platformUrl = platformUrlOf(config)): RouterContext {
  const log = createLogger('sealpost');
  const redis = connectRedis(redisUrl, { maxRetriesPerRequest: 20, enableAutoPipelining: true });
  redis.on('error', (e) => log.warn({ err: e.message }, 'redis connection error'));
  // BullMQ needs its own connections with maxRetriesPerRequest null (blocking commands).
  const connection: ConnectionOptions = bullConnection(redisUrl);
  const keys = new Keys(config.prefix);
  const dataKeys = new DataKeys(redis, keys, masterKey, undefined, undefined, {
    onRotated: (businessId, version) => log.info({ business_id: businessId, version }, 'data key rotated automatically: its newest version reached the seal count'),
  });
  const businesses = new BusinessStore(redis, keys, dataKeys);
  const prefix = keys.bullPrefix;
  // BullMQ's per-queue event streams are bounded (its default keeps 10,000 events).
  const streams = { events: { maxLen: 1000 } };
  const queues = {
    conversations: new Queue<WakeJob>(keys.queueName('conversations'), { connection, prefix, streams }),
    timers: new Queue<TimerJob>(keys.queueName('timers'), { connection, prefix, streams }),
    webhooks: createWebhookQueue(connection, { prefix, queueName: keys.queueName('webhooks') }),
    outbound: createOutboundQueue(connection, prefix, keys.queueName('outbound')),
  };
  const stores = new Stores(redis, keys, config.regions, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys, queues.conversations);
  const webhooks = new WebhookOutbox((b) => stores.forBusiness(businesses, b), keys, queues.webhooks, (b) => dataKeys.get(b));
  const stats = new Stats(redis, keys);
  const outbound = new OutboundService(stores, keys, dataKeys, businesses, mailboxes, config.retentionMs,
    (conv, until, retentionMs) => schedulePurge(queues.timers, conv, until, retentionMs), stats, new RateLimits(redis, keys));
  const transport = new TransportClient(platformUrl);
  const media = new MediaStore((b) => stores.forBusiness(businesses, b), redis, keys, dataKeys, { quotaBytes: config.mediaQuotaBytes });
  outbound.useMedia(media, (ct) => transport.uploadAttachment(ct));
  const publisher = new KeyPublisher(redis, keys, dataKeys, businesses, transport, log.child({ component: 'keys' }), config.retentionMs);
  return {
    config, redis, stores, connection, keys, dataKeys, businesses, mailboxes, webhooks, outbound, transport, publisher, stats, queues, log,
    data: new DataRequests(stores, businesses, keys, dataKeys, mailboxes),
    media,
    async close() {
      publisher.stop();
      await Promise.all(Object.values(queues).map((q) => q.close()));
      // Seals counted in this process are added to the keyrings while the connection is still open.
      await dataKeys.close();
      stores.close();
      transport.close();
      redis.disconnect();
      // A cluster's BullMQ client is shared by the queues and workers of this process: closed after them.
      if (isCluster(connection as unknown as Redis)) (connection as unknown as Redis).disconnect();
    },
  };
}

/** A finished job's processing time and how long it waited past its due time, per queue. */
function observeJob(queue: string, job: Job): void {
  if (job.processedOn && job.finishedOn) metrics.jobSeconds.observe({ queue }, Math.max(0, job.finishedOn - job.processedOn) / 1000);
  if (job.processedOn) metrics.jobWaitSeconds.observe({ queue }, Math.max(0, job.processedOn - job.timestamp - (job.delay ?? 0)) / 1000);
}

/** Turns the host's status updates into webhook jobs. */
function sinksFor(ctx: RouterContext): HostSinks {
  return {
    async webhook(businessId, phoneNumberId, values) {
      await ctx.webhooks.enqueue(businessId, phoneNumberId, values, ctx.config.webhookMaxAgeMs + 86_400_000);
    },
    async timer(conversationId, timerId, at, event) {
      await scheduleTimer(ctx.queues.timers, conversationId, timerId, at, event);
    },
    async cancelTimer(conversationId, timerId) {
      await cancelTimer(ctx.queues.timers, conversationId, timerId);
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
  const host = new ActorHost(ctx.stores, keys, ctx.dataKeys, ctx.businesses, ctx.transport, sinksFor(ctx), ctx.log.child({ component: 'actor-host' }), {
    retentionMs: config.retentionMs,
    bundleRetryMs: config.bundleRetryMs,
    retransmitBaseMs: config.retransmitBaseMs,
    retransmitMaxMs: config.retransmitMaxMs,
  }, (pnid) => ctx.publisher.preKeysOf(pnid));
  host.useMedia(ctx.media);
  const conversations = startConversationWorker({
    connection, prefix, queueName: keys.queueName('conversations'), host, mailboxes: ctx.mailboxes,
    concurrency: config.workerConcurrency, log: ctx.log,
  });
  const timers = startTimerWorker({ connection, prefix, queueName: keys.queueName('timers'), mailboxes: ctx.mailboxes, mailboxTtlMs, log: ctx.log });
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
  const outbound = startOutboundWorker({
    connection, prefix, queueName: keys.queueName('outbound'), businesses: ctx.businesses, outbound: ctx.outbound, log: ctx.log.child({ component: 'outbound-queue' }),
  });
  for (const [queue, w] of [['conversations', conversations], ['timers', timers], ['webhooks', webhooks.worker], ['outbound', outbound]] as const) {
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
      await Promise.all([outbound.close(), conversations.close(), timers.close(), webhooks.worker.close()]);
    },
  };
}
