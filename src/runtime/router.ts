import { GroupHost, type GroupJob } from './group-host.ts';
import { Queue, type ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullConnection, connectRedis, isCluster } from '../redis/connect.ts';
import { MediaStore } from '../media/store.ts';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { platformUrlOf } from '../config.ts';
import { createLogger } from '../log.ts';
import { queueTelemetry } from '../ops/tracing.ts';
import { BusinessStore } from '../store/businesses.ts';
import { Keys } from '../store/keys.ts';
import { DataKeys } from '../store/sealer.ts';
import { Stats } from '../store/stats.ts';
import { defineCommitScript } from './actor-host.ts';
import { Stores } from '../store/stores.ts';
import { RateLimits } from './rate-limits.ts';
import { Mailboxes, type WakeJob } from './mailbox.ts';
import { OutboundService } from './outbound-service.ts';
import { TransportClient } from './transport-client.ts';
import { KeyPublisher } from './key-publisher.ts';
import { DataRequests } from './data-requests.ts';
import { createOutboundQueue, type OutboundJobData, type OutboundJobResult } from '../queues/outbound.ts';
import { schedulePurge, type TimersQueueJob } from '../queues/timers.ts';
import { GroupStore } from '../store/groups.ts';
import { GroupService } from './groups.ts';
import { createWebhookQueue, WebhookOutbox, type WebhookJob } from '../queues/webhooks.ts';

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
  /** Groups (management: create, info, invite links, joins and leaves), sealed per business. */
  groups: GroupService;
  /** Group actors: sending to groups, members' group messages (machines/group.ts). */
  groupHost: GroupHost;
  queues: { conversations: Queue<WakeJob>; timers: Queue<TimersQueueJob>; webhooks: Queue<WebhookJob>; outbound: Queue<OutboundJobData, OutboundJobResult>; groups: Queue<GroupJob> };
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
  // With tracing on, an added job carries its producer's trace context to the worker that processes it.
  const telemetry = queueTelemetry();
  const queues = {
    conversations: new Queue<WakeJob>(keys.queueName('conversations'), { connection, prefix, streams, ...telemetry }),
    timers: new Queue<TimersQueueJob>(keys.queueName('timers'), { connection, prefix, streams, ...telemetry }),
    webhooks: createWebhookQueue(connection, { prefix, queueName: keys.queueName('webhooks'), ...telemetry }),
    outbound: createOutboundQueue(connection, prefix, keys.queueName('outbound'), telemetry),
    groups: new Queue<GroupJob>(keys.queueName('groups'), { connection, prefix, streams, ...telemetry }),
  };
  const stores = new Stores(redis, keys, config.regions, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys);
  const webhooks = new WebhookOutbox((b) => stores.forBusiness(businesses, b), keys, queues.webhooks, (b) => dataKeys.get(b));
  const stats = new Stats(redis, keys);
  const outbound = new OutboundService(stores, keys, dataKeys, businesses, mailboxes, config.retentionMs,
    (conv, until, retentionMs) => schedulePurge(queues.timers, conv, until, retentionMs), stats, new RateLimits(redis, keys));
  const transport = new TransportClient(platformUrl);
  const media = new MediaStore((b) => stores.forBusiness(businesses, b), redis, keys, dataKeys, { quotaBytes: config.mediaQuotaBytes });
  outbound.useMedia(media, (ct) => transport.uploadAttachment(ct));
  const publisher = new KeyPublisher(redis, keys, dataKeys, businesses, transport, log.child({ component: 'keys' }), config.retentionMs);
  const groupStore = new GroupStore(redis, (b) => stores.forBusiness(businesses, b), keys, (b) => dataKeys.get(b));
  const groups = new GroupService(groupStore, businesses, transport,
    (b, p, values) => webhooks.enqueue(b, p, values, config.webhookMaxAgeMs + 86_400_000), log.child({ component: 'groups' }));
  const groupHost = new GroupHost({
    stores, keys, dataKeys, businesses, groups: groupStore, transport, queue: queues.groups, mailboxes,
    ensure: (conv, b, p, wa) => outbound.ensure(conv, b, p, wa),
    webhook: (b, p, values) => webhooks.enqueue(b, p, values, config.webhookMaxAgeMs + 86_400_000),
    count: (b, fields) => stats.count(b, fields),
    retentionOf: (b) => outbound.retentionOf(b),
    log: log.child({ component: 'group-host' }),
    leaseMs: config.leaseMs, retransmitBaseMs: config.retransmitBaseMs, retransmitMaxMs: config.retransmitMaxMs,
  });
  groups.onMembersChanged = (b, g) => groupHost.post(b, g, [{ type: 'CHECK', at: Date.now() }]);
  const data = new DataRequests(stores, businesses, keys, dataKeys, mailboxes);
  data.groups = groups;
  return {
    config, redis, stores, connection, keys, dataKeys, businesses, mailboxes, webhooks, outbound, transport, publisher, stats, queues, log,
    data,
    media,
    groups,
    groupHost,
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
