import { PreKeyBundle } from '@signalapp/libsignal-client';
import { bundleFromWire } from '../signal/bundle.ts';

/** An envelope handed to the transport: ids, addresses and ciphertext only. */
export interface OutgoingEnvelope {
  id: string;
  from: string;
  to: string;
  type: number;
  body: string;
}

/** An event the transport holds for the router. */
export type TransportEvent =
  | { event_id: string; kind: 'receipt'; status: 'delivered' | 'read'; id: string; from: string; to: string; timestamp: string }
  | { event_id: string; kind: 'envelope'; id: string; from: string; to: string; type: number; body: string; timestamp: string }
  | { event_id: string; kind: 'spam_report'; from: string; to: string; timestamp: string };

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

/** The router's HTTP client for the transport (prekey directory, envelope relay, event queue). */
export class TransportClient {
  constructor(readonly baseUrl: string, private readonly timeoutMs = 10_000) {}

  private async call(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<{ status: number; json: any }> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      throw new TransportUnavailableError(`transport unreachable: ${(e as Error).message}`);
    }
    const text = await res.text();
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (res.status >= 500) throw new TransportUnavailableError(`transport answered ${res.status}`);
    return { status: res.status, json };
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

  /** Hands envelopes to the transport; returns the ids it rejected as unknown recipients. */
  async send(envelopes: OutgoingEnvelope[]): Promise<{ unknown: Set<string> }> {
    const unknown = new Set<string>();
    if (!envelopes.length) return { unknown };
    const { status, json } = await this.call('POST', '/v1/envelopes', { envelopes });
    if (status === 404) {
      for (const e of envelopes) unknown.add(e.id);
      return { unknown };
    }
    if (status !== 202 && status !== 200) throw new TransportUnavailableError(`envelopes answered ${status}`);
    for (const r of (json?.rejected ?? []) as { id: string; error: string }[]) {
      if (r.error === 'unknown_recipient') unknown.add(r.id);
    }
    return { unknown };
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
