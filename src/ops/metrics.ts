import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Queue } from 'bullmq';

/**
 * Prometheus instruments of one process. Labels never carry user identifiers: no phone numbers, wa_ids,
 * wamids, conversation or business ids; only queue names, states, error codes and outcomes.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly accepted: Counter;
  readonly refused: Counter<'code'>;
  readonly acceptToDelivered: Histogram;
  readonly sent: Counter;
  readonly retransmissions: Counter;
  /** Device envelopes inside the messages handed over (a message carries one per device of its user). */
  readonly deviceEnvelopes: Counter;
  readonly groupRelays: Counter;
  /** Sends the transport refused because the devices did not match the user's (409 mismatch, 410 stale). */
  readonly deviceMismatches: Counter<'kind'>;
  readonly statuses: Counter<'status'>;
  readonly failures: Counter<'code'>;
  readonly inbound: Counter;
  readonly hydrations: Counter;
  readonly warmDrains: Counter;
  readonly drainSeconds: Histogram;
  /** Conversations one shard wake-up job drained (src/runtime/shard-runner.ts). */
  readonly shardDrains: Histogram;
  readonly jobSeconds: Histogram<'queue'>;
  readonly jobWaitSeconds: Histogram<'queue'>;
  readonly jobFailures: Counter<'queue'>;
  readonly webhookSeconds: Histogram<'outcome'>;
  readonly webhookDeliveries: Counter<'outcome'>;
  private queues: Queue[] = [];

  constructor() {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'sealpost_' });
    this.accepted = new Counter({ name: 'sealpost_messages_accepted_total', help: 'Outbound messages accepted by the API or the outbound queue', registers: [r] });
    this.refused = new Counter({ name: 'sealpost_messages_refused_total', help: 'Outbound messages refused at acceptance, by Cloud API error code', labelNames: ['code'], registers: [r] });
    this.acceptToDelivered = new Histogram({
      name: 'sealpost_accept_to_delivered_seconds', help: 'From acceptance to the device\'s delivery receipt',
      buckets: [0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 3600], registers: [r],
    });
    this.sent = new Counter({ name: 'sealpost_envelopes_sent_total', help: 'Envelopes handed to the transport (first sends and retransmissions)', registers: [r] });
    this.retransmissions = new Counter({ name: 'sealpost_retransmissions_total', help: 'Envelopes handed to the transport again (no receipt in time)', registers: [r] });
    this.groupRelays = new Counter({ name: 'sealpost_group_messages_relayed_total', help: 'Group messages handed to the transport (once per message and attempt, whatever the members and devices)', registers: [r] });
    this.deviceEnvelopes = new Counter({ name: 'sealpost_device_envelopes_sent_total', help: 'Device envelopes handed to the transport (one per device of the user in each message sent)', registers: [r] });
    this.deviceMismatches = new Counter({ name: 'sealpost_device_mismatches_total', help: 'Sends refused because the user\'s devices changed, by kind (mismatch: 409, stale: 410)', labelNames: ['kind'], registers: [r] });
    this.statuses = new Counter({ name: 'sealpost_statuses_total', help: 'Status updates emitted to businesses, by status', labelNames: ['status'], registers: [r] });
    this.failures = new Counter({ name: 'sealpost_message_failures_total', help: 'Messages that ended failed, by Cloud API error code', labelNames: ['code'], registers: [r] });
    this.inbound = new Counter({ name: 'sealpost_inbound_messages_total', help: 'User messages decrypted and forwarded', registers: [r] });
    this.hydrations = new Counter({ name: 'sealpost_actors_hydrated_total', help: 'Conversation actors loaded from Redis to run their mailbox', registers: [r] });
    this.warmDrains = new Counter({ name: 'sealpost_actors_warm_total', help: 'Drains that started from the state kept in memory since the process\'s last drain of the conversation (still current in Redis)', registers: [r] });
    this.drainSeconds = new Histogram({ name: 'sealpost_actor_drain_seconds', help: 'One drain of a conversation mailbox', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [r] });
    this.shardDrains = new Histogram({ name: 'sealpost_shard_job_drains', help: 'Conversations drained by one shard wake-up job', buckets: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256], registers: [r] });
    this.jobSeconds = new Histogram({ name: 'sealpost_job_processing_seconds', help: 'Job processing time, by queue', labelNames: ['queue'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30], registers: [r] });
    this.jobWaitSeconds = new Histogram({ name: 'sealpost_job_wait_seconds', help: 'From a job\'s due time to its start, by queue', labelNames: ['queue'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300], registers: [r] });
    this.jobFailures = new Counter({ name: 'sealpost_job_failures_total', help: 'Job attempts that failed, by queue', labelNames: ['queue'], registers: [r] });
    this.webhookSeconds = new Histogram({ name: 'sealpost_webhook_delivery_seconds', help: 'One webhook POST, by outcome', labelNames: ['outcome'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [r] });
    this.webhookDeliveries = new Counter({ name: 'sealpost_webhook_deliveries_total', help: 'Webhook POSTs, by outcome (delivered, rejected, unreachable)', labelNames: ['outcome'], registers: [r] });
    const queues = () => this.queues;
    new Gauge({
      name: 'sealpost_queue_jobs', help: 'Jobs in each queue, by state (read from Redis at scrape time)', labelNames: ['queue', 'state'], registers: [r],
      async collect() {
        for (const q of queues()) {
          const counts = await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children');
          for (const [state, n] of Object.entries(counts)) this.set({ queue: q.name.replace(/[{}]/g, ''), state }, n);
        }
      },
    });
  }

  /** The queues whose depths are reported. */
  watchQueues(queues: Queue[]): void {
    this.queues = queues;
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** The process's instruments (one registry per process; every module reports into it). */
export const metrics = new Metrics();
