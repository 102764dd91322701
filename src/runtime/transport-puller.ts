import type { Logger } from 'pino';
import type { BusinessStore } from '../store/businesses.ts';
import type { DataKeys } from '../store/sealer.ts';
import { conversationId, conversationOfWamid, isWamidShaped } from './ids.ts';
import type { Mailboxes, MailboxEvent } from './mailbox.ts';
import { TransportUnavailableError, type TransportClient, type TransportEvent } from './transport-client.ts';
import { maskPhone } from '../log.ts';
import { inSpan, runInTrace } from '../ops/tracing.ts';
import { traced } from './trace-context.ts';

/** What the transport says about group messages: receipts of the business's, and members' own. */
export type GroupTraffic = Extract<TransportEvent, { kind: 'group_envelope' }> | (Extract<TransportEvent, { kind: 'receipt' }> & { group_id: string });

/**
 * Pulls the transport's events (receipts, device envelopes) and posts each to its conversation's mailbox,
 * then acknowledges them. Any number of pullers may run (one per worker process): the transport leases
 * each event to one puller, and an event that is not acknowledged comes back (at-least-once; the machine
 * ignores repeats).
 */
export class TransportPuller {
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly transport: TransportClient,
    private readonly businesses: BusinessStore,
    private readonly dataKeys: DataKeys,
    private readonly mailboxes: Mailboxes,
    private readonly conversations: { ensure(conv: string, businessId: string, phoneNumberId: string, waId: string): Promise<void> },
    private readonly log: Logger,
    private readonly mailboxTtlMs: number,
    /** How long the transport keeps a pulled event from others: a killed puller's events return after it. */
    private readonly leaseMs = 15_000,
  ) {}

  /** Called with each change of a business number's standing the transport reports (set by the router). */
  onIntegrity?: (ev: Extract<TransportEvent, { kind: 'integrity' }>) => Promise<void>;

  /** Called with a batch's receipts of group messages and members' messages to groups, in pull order (set by the router). */
  onGroupTraffic?: (evs: GroupTraffic[]) => Promise<void>;

  /** Called with each `group_join` / `group_leave` the transport reports, in pull order (set by the router). */
  onGroupEvent?: (ev: Extract<TransportEvent, { kind: 'group_join' | 'group_leave' }>) => Promise<void>;

  /** Starts pulling in the background. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops after the current pull; events it holds un-acked are redelivered by the transport. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    let backoff = 100;
    while (this.running) {
      try {
        const events = await this.transport.pull(256, 1000, this.leaseMs);
        if (events.length) await this.handle(events);
        backoff = 100;
      } catch (e) {
        if (!(e instanceof TransportUnavailableError)) this.log.error({ err: (e as Error).message }, 'transport pull failed');
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  /** Routes one batch of events to mailboxes, then acknowledges it. */
  async handle(events: TransportEvent[]): Promise<void> {
    const byConversation = new Map<string, MailboxEvent[]>();
    const at = Date.now();
    // Routed all at once (each may wait on Redis), then grouped in pull order, so a conversation's events
    // reach its mailbox in the order the transport gave them.
    const inOrder = (ev: TransportEvent) => ev.kind === 'integrity' || ev.kind === 'group_join' || ev.kind === 'group_leave';
    // Group traffic goes to the groups' actors together (one mailbox append per group and batch).
    const isGroupTraffic = (ev: TransportEvent): ev is GroupTraffic => ev.kind === 'group_envelope' || (ev.kind === 'receipt' && !!ev.group_id);
    const groupTraffic = events.filter(isGroupTraffic);
    const routes = await Promise.all(events.map((ev) => (inOrder(ev) || isGroupTraffic(ev) ? null : this.route(ev, at))));
    if (groupTraffic.length) await this.onGroupTraffic?.(groupTraffic);
    // A number's standing changes, and joins and leaves of groups, apply one after the other, in order.
    for (const ev of events) if (inOrder(ev)) await this.route(ev, at);
    for (const routed of routes) {
      if (!routed) continue;
      const list = byConversation.get(routed.conversationId) ?? [];
      list.push(routed.event);
      byConversation.set(routed.conversationId, list);
    }
    // The wake-up job belongs to the trace of the first message it is for (tracing on).
    await Promise.all([...byConversation].map(([conv, evs]) => runInTrace(evs.find((e) => e.tp)?.tp, () => this.mailboxes.post(conv, evs, this.mailboxTtlMs))));
    await this.transport.ack(events.map((e) => e.event_id));
  }

  private async route(ev: TransportEvent, at: number): Promise<{ conversationId: string; event: MailboxEvent } | null> {
    if (ev.kind === 'receipt') {
      const conv = conversationOfWamid(ev.id);
      if (!conv) return null;
      // Only the conversation's own user acknowledges its messages: a receipt from anyone else (a device
      // naming a wamid it saw elsewhere) would mark another user's message delivered or read.
      const pn = await this.businesses.phoneNumberByDisplay(ev.to);
      if (!pn || (await conversationId(this.dataKeys, pn.business_id, pn.phone_number_id, ev.from)) !== conv) {
        this.log.warn({ from: maskPhone(ev.from), to: maskPhone(ev.to) }, 'receipt for a message of another conversation dropped');
        return null;
      }
      // A companion's receipt names its device (the phone's, device 1, is left as it always was).
      const device = Number.isInteger(ev.device_id) && ev.device_id! > 1 ? { device: ev.device_id! } : {};
      return { conversationId: conv, event: { type: ev.status === 'read' ? 'READ' : 'DELIVERED', wamid: ev.id, at, ...device } };
    }
    if (ev.kind === 'envelope') return this.routeEnvelope(ev, at);
    if (ev.kind === 'integrity') await this.onIntegrity?.(ev);
    if (ev.kind === 'group_join' || ev.kind === 'group_leave') await this.onGroupEvent?.(ev);
    return null;
  }

  /**
   * A user's message to its conversation. Tracing on, it starts the message's trace: a `sealpost.inbound` span
   * whose context rides in the mailbox entry to the drain that decrypts it and on to its webhook.
   */
  private routeEnvelope(ev: Extract<TransportEvent, { kind: 'envelope' }>, at: number): Promise<{ conversationId: string; event: MailboxEvent } | null> {
    const attributes = { 'messaging.system': 'sealpost.transport', 'messaging.operation.type': 'receive', 'sealpost.wamid': isWamidShaped(ev.id) ? ev.id : undefined };
    return inSpan('sealpost.inbound', { kind: 'consumer', parent: null, attributes }, async (span) => {
      if (!isWamidShaped(ev.id)) {
        this.log.warn({ from: maskPhone(ev.from) }, 'envelope with a malformed id dropped');
        return null;
      }
      const pn = await this.businesses.phoneNumberByDisplay(ev.to);
      if (!pn) {
        this.log.warn({ to: maskPhone(ev.to) }, 'envelope for an unknown business number dropped');
        return null;
      }
      const conv = await conversationId(this.dataKeys, pn.business_id, pn.phone_number_id, ev.from);
      span?.set({ 'sealpost.business_id': pn.business_id, 'sealpost.phone_number_id': pn.phone_number_id, 'sealpost.conversation_id': conv });
      // A user may open the conversation: make sure it exists (idempotent) before its first event.
      await this.conversations.ensure(conv, pn.business_id, pn.phone_number_id, ev.from);
      // A linked companion's envelope names its device (the phone's, device 1, is left as it always was).
      const device = Number.isInteger(ev.device_id) && ev.device_id! > 1 ? { device: ev.device_id! } : {};
      return { conversationId: conv, event: traced({ type: 'ENVELOPE', id: ev.id, at, messageType: ev.type, body: ev.body, ...device }) };
    });
  }
}
