import { PreKeyBundle } from '@signalapp/libsignal-client';
import { bundleFromWire } from '../signal/bundle.ts';
import { HttpJsonClient } from './http-json.ts';
import { MAX_ATTACHMENT_CIPHERTEXT_BYTES } from '../media/limits.ts';
import { injectTraceHeaders, spanActive } from '../ops/tracing.ts';
import { inBatchRequest } from './trace-context.ts';

/** An event the transport holds for the router. */
export type TransportEvent =
  /** `device_id`: which of the user's devices it comes from (1, the phone, when absent). */
  | { event_id: string; kind: 'receipt'; status: 'delivered' | 'read'; id: string; from: string; to: string; timestamp: string; device_id?: number; group_id?: string }
  /** A member's message to a group (SenderKey ciphertext, type 7). */
  | { event_id: string; kind: 'group_envelope'; id: string; group_id: string; from: string; to: string; type: number; body: string; timestamp: string; device_id?: number }
  | { event_id: string; kind: 'envelope'; id: string; from: string; to: string; type: number; body: string; timestamp: string; device_id?: number }
  | { event_id: string; kind: 'spam_report'; from: string; to: string; timestamp: string }
  | {
    event_id: string; kind: 'integrity'; to: string; event: string; quality_rating: 'GREEN' | 'YELLOW' | 'RED'; current_limit: string; blocked: boolean;
    timestamp: string;
  }
  /** A user asked to join a group by its invite link (`pending`: the group is approval_required). Membership is the router's to change. */
  | { event_id: string; kind: 'group_join'; group_id: string; from: string; to: string; invite_code: string; pending: boolean; timestamp: string }
  /** A user left a group. */
  | { event_id: string; kind: 'group_leave'; group_id: string; from: string; to: string; timestamp: string };

/** The transport does not know the group (deleted). */
export class UnknownGroupError extends Error {
  constructor() {
    super('unknown group');
    this.name = 'UnknownGroupError';
  }
}

/** A group as the transport registers it (`PUT /v1/groups/{group_id}`). */
export interface TransportGroup {
  owner: string;
  invite_code: string;
  join_approval: 'auto_approve' | 'approval_required';
  members: string[];
}

/** The transport answered that it does not know the address. */
export class UnknownAddressError extends Error {
  constructor(readonly address: string) {
    super('unknown address');
    this.name = 'UnknownAddressError';
  }
}

/** The transport could not be reached or answered with a server error; try again later. */
export class TransportUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TransportUnavailableError';
  }
}

/** An attachment's ciphertext is larger than the reader takes; the rest of it was not read. */
export class AttachmentTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`the attachment is larger than ${maxBytes} bytes of ciphertext`);
    this.name = 'AttachmentTooLargeError';
  }
}

/** The transport knows the address but not this device of it (unlinked, or never on the list). */
export class UnknownDeviceError extends Error {
  constructor(readonly address: string, readonly deviceId: number) {
    super(`unknown device ${deviceId}`);
    this.name = 'UnknownDeviceError';
  }
}

/** One message to every device of a user (`POST /v1/messages`): an envelope per device, bodies base64. */
export interface OutgoingDeviceMessage {
  id: string;
  from: string;
  to: string;
  envelopes: { device_id: number; registration_id: number; type: number; body: string }[];
}

/**
 * What the transport did with one message: took it for every device; refused it because the devices differ
 * from the user's (`mismatch`: 409) or a session is stale (`stale`: 410), nothing delivered; refused it under
 * its integrity rules (`code`: the Cloud API error code; 131000 for a refusal this client does not know); or
 * does not know the recipient.
 */
export type MessageOutcome =
  | { id: string; outcome: 'accepted' }
  | { id: string; outcome: 'mismatch'; missing: number[]; extra: number[] }
  | { id: string; outcome: 'stale'; stale: number[] }
  | { id: string; outcome: 'refused'; code: number }
  | { id: string; outcome: 'unknown_recipient' };

/** Most messages in one `POST /v1/messages` batch (the transport's limit). */
const MAX_MESSAGES_PER_REQUEST = 1000;

/** Cloud API "Something went wrong": a refusal reason this client does not know. */
const UNKNOWN_REFUSAL_CODE = 131000;

/** The transport's refusal reasons and their Cloud API codes (src/platform/integrity.ts). */
const REFUSALS: Record<string, number> = { spam_limit: 131048, ecosystem_limit: 131049, policy_blocked: 368, user_blocked: 131026 };

/** One caller's messages waiting for the next batch, with how to answer it. */
interface PendingSend {
  messages: OutgoingDeviceMessage[];
  /** Tracing on: the trace contexts of the messages' `transport send` spans (the request links to them). */
  traces?: string[];
  resolve: (r: MessageOutcome[]) => void;
  reject: (e: unknown) => void;
}

/**
 * The router's HTTP client for the transport (prekey directory, envelope relay, event queue).
 *
 * Sends from every conversation this process runs share batches: while {@link maxInFlight} requests are
 * out, further envelopes wait and leave together in the next request (at most {@link maxBatch}), so under
 * load one HTTP request carries many conversations' envelopes and at low load a send leaves at once.
 */
export class TransportClient {
  private readonly http: HttpJsonClient;
  private waiting: PendingSend[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    readonly baseUrl: string,
    private readonly timeoutMs = 10_000,
    private readonly maxInFlight = 4,
    private readonly maxBatch = 500,
  ) {
    this.http = new HttpJsonClient(baseUrl);
  }

  /**
   * One request. Tracing on, an HTTP client span covers it when it serves traced messages (`traces`) or runs
   * inside a span (a bundle fetch in a drain); the event poll alone makes none.
   */
  private async call(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs, traces?: string[]): Promise<{ status: number; json: any }> {
    if (!traces?.length && !spanActive()) return this.request(method, path, body, timeoutMs);
    const url = new URL(this.baseUrl.replace(/\/$/, '') + path);
    // The path names no user (the keys and devices routes' do: /v1/keys/{address}, /v1/devices/{address}), so
    // the route stands in for it.
    url.pathname = url.pathname.replace(/^(.*\/v1\/(?:keys|devices)\/)[^/]+/, '$1{address}').replace(/(\/v1\/keys\/\{address\}\/)\d+/, '$1{device_id}');
    return inBatchRequest(method, url, traces ?? [], { parent: traces?.[0] }, async (span) => {
      const answer = await this.request(method, path, body, timeoutMs, injectTraceHeaders({}));
      span?.set({ 'http.response.status_code': answer.status });
      if (answer.status >= 500) span?.fail({ name: String(answer.status) });
      return answer;
    });
  }

  private async request(method: string, path: string, body: unknown, timeoutMs: number, headers?: Record<string, string>): Promise<{ status: number; json: any }> {
    let answer;
    try {
      answer = await this.http.request(method, path, body, timeoutMs, headers);
    } catch (e) {
      throw new TransportUnavailableError(`transport unreachable: ${(e as Error).message}`);
    }
    if (answer.status >= 500) throw new TransportUnavailableError(`transport answered ${answer.status}`);
    return answer;
  }

  /** Puts an attachment's ciphertext in the transport's blob store; answers where it is kept. */
  async uploadAttachment(ciphertext: Buffer): Promise<string> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}/v1/attachments`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(ciphertext), signal: AbortSignal.timeout(60_000) });
    } catch (e) {
      throw new TransportUnavailableError(`transport unreachable: ${(e as Error).message}`);
    }
    const json = (await res.json().catch(() => null)) as { pointer?: string } | null;
    if (res.status !== 200 || !json?.pointer) throw new TransportUnavailableError(`attachment upload answered ${res.status}`);
    return json.pointer;
  }

  /**
   * Fetches an attachment's ciphertext from the transport's blob store (null when it has none), reading at most
   * `maxBytes`: past that the body is cancelled and {@link AttachmentTooLargeError} thrown, so a sender (or the
   * transport) cannot make the router buffer more than the largest file it would keep.
   */
  async downloadAttachment(pointer: string, maxBytes = MAX_ATTACHMENT_CIPHERTEXT_BYTES): Promise<Buffer | null> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}/v1/attachments/${encodeURIComponent(pointer)}`, { signal: AbortSignal.timeout(60_000) });
    } catch (e) {
      throw new TransportUnavailableError(`transport unreachable: ${(e as Error).message}`);
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      if (res.status === 404) return null;
      throw new TransportUnavailableError(`attachment download answered ${res.status}`);
    }
    // A stated length over the bound is refused unread; the count below holds whatever the header says.
    if (Number(res.headers.get('content-length') ?? 0) > maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new AttachmentTooLargeError(maxBytes);
    }
    if (!res.body) return Buffer.alloc(0);
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw new AttachmentTooLargeError(maxBytes);
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks, total);
  }

  /** Closes the keep-alive connections. */
  close(): void {
    this.http.close();
  }

  /** Fetches a device's prekey bundle. */
  async fetchBundle(address: string): Promise<PreKeyBundle> {
    const { status, json } = await this.call('GET', `/v1/keys/${encodeURIComponent(address)}`);
    if (status === 404) throw new UnknownAddressError(address);
    if (status !== 200) throw new TransportUnavailableError(`bundle fetch answered ${status}`);
    return bundleFromWire(json);
  }

  /** How many one-time keys the directory still holds for `address`; null when it has no bundle at all. */
  async keyCounts(address: string): Promise<{ prekeys: number; kyber_prekeys: number } | null> {
    const { status, json } = await this.call('GET', `/v1/keys/${encodeURIComponent(address)}/count`);
    if (status === 404) return null;
    if (status !== 200) throw new TransportUnavailableError(`key count answered ${status}`);
    return json as { prekeys: number; kyber_prekeys: number };
  }

  /** Publishes (or tops up) `address`'s prekeys in the directory. */
  async publishKeys(address: string, upload: unknown): Promise<void> {
    const { status, json } = await this.call('PUT', `/v1/keys/${encodeURIComponent(address)}`, upload);
    if (status !== 200) throw new Error(`key upload refused (${status}): ${json?.error ?? ''}`);
  }

  /**
   * Hands messages to the transport, each with an envelope per device (`POST /v1/messages`), sharing requests
   * with whatever else this process sends meanwhile; answers each message's outcome, in the order given.
   * `traces` (tracing on): the messages' trace contexts, which the batch's request links to.
   */
  send(messages: OutgoingDeviceMessage[], traces?: string[]): Promise<MessageOutcome[]> {
    if (!messages.length) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.waiting.push({ messages, resolve, reject, ...(traces?.length ? { traces } : {}) });
      this.schedule();
    });
  }

  /** Starts a batch on the next turn of the event loop (so sends made in the same turn share it). */
  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || !this.waiting.length) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length) {
      const batch: PendingSend[] = [];
      let n = 0;
      while (this.waiting.length && (n === 0 || n + this.waiting[0]!.messages.length <= this.maxBatch)) {
        const p = this.waiting.shift()!;
        batch.push(p);
        n += p.messages.length;
      }
      this.inFlight++;
      void this.sendBatch(batch).finally(() => {
        this.inFlight--;
        this.schedule();
      });
    }
  }

  private async sendBatch(batch: PendingSend[]): Promise<void> {
    try {
      // Ids are distinct across callers: a wamid belongs to one conversation, whose drains run one at a time.
      const messages = batch.flatMap((p) => p.messages);
      const traces = batch.flatMap((p) => p.traces ?? []);
      const outcomes = await this.post(messages, traces);
      let i = 0;
      for (const p of batch) {
        p.resolve(outcomes.slice(i, i + p.messages.length));
        i += p.messages.length;
      }
    } catch (e) {
      for (const p of batch) p.reject(e);
    }
  }

  /** Fetches a user's signed device list (`GET /v1/devices/{address}`), unverified: the wire JSON. */
  async fetchDeviceList(address: string): Promise<unknown> {
    const { status, json } = await this.call('GET', `/v1/devices/${encodeURIComponent(address)}`);
    if (status === 404) throw new UnknownAddressError(address);
    if (status !== 200) throw new TransportUnavailableError(`device list fetch answered ${status}`);
    return json;
  }

  /** Fetches one device's prekey bundle; throws UnknownDeviceError when the address has no such device. */
  async fetchDeviceBundle(address: string, deviceId: number): Promise<PreKeyBundle> {
    const { status, json } = await this.call('GET', `/v1/keys/${encodeURIComponent(address)}/${deviceId}`);
    if (status === 404) throw json?.error === 'unknown_device' ? new UnknownDeviceError(address, deviceId) : new UnknownAddressError(address);
    if (status !== 200) throw new TransportUnavailableError(`bundle fetch answered ${status}`);
    return bundleFromWire(json);
  }

  /**
   * Hands messages to the transport, each with an envelope per device (`POST /v1/messages`, batch form, at
   * most 1,000 a request); answers each message's outcome, in the order given. Ids must be distinct.
   * `traces` (tracing on): the messages' trace contexts, which the requests link to.
   */
  async sendMessages(messages: OutgoingDeviceMessage[], traces?: string[]): Promise<MessageOutcome[]> {
    if (new Set(messages.map((m) => m.id)).size !== messages.length) throw new Error('sendMessages: message ids must be distinct');
    return this.post(messages, traces);
  }

  private async post(messages: OutgoingDeviceMessage[], traces?: string[]): Promise<MessageOutcome[]> {
    const out: MessageOutcome[] = [];
    for (let i = 0; i < messages.length; i += MAX_MESSAGES_PER_REQUEST) {
      const chunk = messages.slice(i, i + MAX_MESSAGES_PER_REQUEST);
      const { status, json } = await this.call('POST', '/v1/messages', { messages: chunk }, this.timeoutMs, traces);
      if (status === 400) throw new Error(`messages refused as malformed: ${json?.error ?? ''}`);
      if (status !== 202 && status !== 200) throw new TransportUnavailableError(`messages answered ${status}`);
      const rejected = new Map<string, { error: string; missing?: number[]; extra?: number[]; stale?: number[] }>();
      for (const r of (json?.rejected ?? []) as { id: string; error: string }[]) rejected.set(r.id, r);
      for (const m of chunk) {
        const r = rejected.get(m.id);
        if (!r) out.push({ id: m.id, outcome: 'accepted' });
        else if (r.error === 'unknown_recipient') out.push({ id: m.id, outcome: 'unknown_recipient' });
        else if (r.error === 'stale_devices') out.push({ id: m.id, outcome: 'stale', stale: r.stale ?? [] });
        else if (r.error === 'mismatched_devices') out.push({ id: m.id, outcome: 'mismatch', missing: r.missing ?? [], extra: r.extra ?? [] });
        else out.push({ id: m.id, outcome: 'refused', code: REFUSALS[r.error] ?? UNKNOWN_REFUSAL_CODE });
      }
    }
    return out;
  }

  /** Registers or replaces a group with the transport (its members, owner and invite code; a replaced code is revoked). */
  async putGroup(groupId: string, group: TransportGroup): Promise<void> {
    const { status, json } = await this.call('PUT', `/v1/groups/${encodeURIComponent(groupId)}`, group);
    if (status === 400 || status === 409) throw new Error(`group refused by the transport: ${String(json?.error ?? status).slice(0, 200)}`);
    if (status !== 200) throw new TransportUnavailableError(`group put answered ${status}`);
  }

  /** Deletes a group from the transport (its invite code too); an unknown group is already gone. */
  async deleteGroup(groupId: string): Promise<void> {
    const { status } = await this.call('DELETE', `/v1/groups/${encodeURIComponent(groupId)}`);
    if (status !== 200 && status !== 404) throw new TransportUnavailableError(`group delete answered ${status}`);
  }

  /**
   * Relays group messages (the same SenderKey ciphertext to every device of every registered member).
   * Throws UnknownGroupError when the transport does not know the group, TransportUnavailableError when down.
   */
  async relayGroup(groupId: string, messages: { id: string; from: string; type: number; body: string }[]): Promise<Record<string, number[]>> {
    const { status, json } = await this.call('POST', `/v1/groups/${encodeURIComponent(groupId)}/messages`, { messages });
    if (status === 404) throw new UnknownGroupError();
    if (status === 400 || status === 403) throw new Error(`group messages refused by the transport: ${String(json?.error ?? status).slice(0, 200)}`);
    if (status !== 202) throw new TransportUnavailableError(`group messages answered ${status}`);
    // The devices each member has now, as the transport copies to them (absent from an older transport: none said).
    const devices = (json?.devices ?? {}) as Record<string, unknown>;
    return Object.fromEntries(Object.entries(devices).filter(([, v]) => Array.isArray(v) && v.every((d) => Number.isInteger(d))) as [string, number[]][]);
  }

  /** Long-polls the transport's events for the router. */
  async pull(max: number, waitMs: number, leaseMs: number): Promise<TransportEvent[]> {
    const { status, json } = await this.call('POST', '/v1/events/pull', { max, wait_ms: waitMs, lease_ms: leaseMs }, waitMs + this.timeoutMs);
    if (status !== 200) throw new TransportUnavailableError(`events answered ${status}`);
    return (json?.events ?? []) as TransportEvent[];
  }

  /** Acknowledges handled events so the transport deletes them. */
  async ack(eventIds: string[]): Promise<void> {
    if (!eventIds.length) return;
    const { status } = await this.call('POST', '/v1/events/ack', { event_ids: eventIds });
    if (status !== 200) throw new TransportUnavailableError(`ack answered ${status}`);
  }
}
