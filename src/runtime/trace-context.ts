import { AsyncLocalStorage } from 'node:async_hooks';
import { activeTraceparent, annotateActiveSpan, injectTraceHeaders, inSpan, startSpan, tracingOn, type SpanAttributes, type TraceSpan } from '../ops/tracing.ts';
import type { FetchLike } from '../webhook/delivery.ts';
import type { Loaded } from './host/loaded.ts';
import type { MailboxEvent } from './mailbox.ts';
import type { MessageOutcome, OutgoingDeviceMessage } from './transport-client.ts';

/**
 * How one message's trace crosses the batches Sealpost makes (see docs/operations.md, Tracing). A message's
 * trace context (W3C `traceparent`) rides in its mailbox entry (`tp`) and in its message row; a drain
 * handles many messages at once, so its span links to each message's trace, and what it does for one
 * message (the step's event, the transport hand-over, its statuses) is a span parented to that message's
 * context. Everything here costs one branch when tracing is off, and adds no field to a mailbox entry then.
 */

/** The drain under way in this async context: its span and one span per traced message it handles. */
interface DrainTrace {
  span: TraceSpan;
  messages: Map<string, TraceSpan>;
}

const drains = new AsyncLocalStorage<DrainTrace>();

/** The event with the active trace context (`tp`) when tracing is on and a span is active; else as it is. */
export function traced<E extends MailboxEvent>(event: E): E {
  const tp = activeTraceparent();
  return tp ? { ...event, tp } : event;
}

/** The id a mailbox event is about (its message), if any. */
function messageIdOf(e: MailboxEvent): string | undefined {
  return 'wamid' in e ? e.wamid : 'id' in e ? e.id : undefined;
}

/**
 * Runs a drain of the conversation in a `sealpost.drain` span (a child of the wake-up job's span) that the
 * drain's traced messages are linked to; their own spans end with it.
 */
export async function traceDrain<T>(conversationId: string, fn: () => Promise<T>): Promise<T> {
  if (!tracingOn()) return fn();
  return inSpan('sealpost.drain', { attributes: { 'sealpost.conversation_id': conversationId } }, async (span) => {
    const trace: DrainTrace = { span: span!, messages: new Map() };
    try {
      return await drains.run(trace, fn);
    } catch (e) {
      // Another worker holds the conversation: not a failure, the drain is simply someone else's.
      if ((e as Error).name === 'LeaseBusyError') span!.set({ 'sealpost.lease_busy': true });
      for (const m of trace.messages.values()) m.fail(e);
      throw e;
    } finally {
      for (const m of trace.messages.values()) m.end();
    }
  });
}

/**
 * A mailbox event as the drain reads it, without its trace context: the drain's span links to the message's
 * trace, and a `sealpost.conversation {EVENT}` span, parented to it, stands for the message in this drain.
 */
export function untraced(e: MailboxEvent): MailboxEvent {
  if (e.tp === undefined) return e;
  const { tp, ...event } = e;
  const drain = drains.getStore();
  const id = messageIdOf(event as MailboxEvent);
  if (drain) {
    drain.span.link(tp);
    const span = startSpan(`sealpost.conversation ${event.type}`, {
      parent: tp, links: [drain.span.traceparent], attributes: { 'sealpost.event': event.type, 'sealpost.wamid': id },
    });
    if (span && id) drain.messages.get(id)?.end();
    if (span && id) drain.messages.set(id, span);
  }
  return event as MailboxEvent;
}

/** After hydration: the conversation's business, number and state on the drain's spans. */
export function noteConversation(c: Loaded): void {
  const drain = drains.getStore();
  if (!drain) return;
  const attrs: SpanAttributes = {
    'sealpost.conversation_id': c.id, 'sealpost.business_id': c.meta.businessId, 'sealpost.phone_number_id': c.meta.phoneNumberId,
    'sealpost.state': String(c.snapshot.value),
  };
  drain.span.set(attrs);
  for (const m of drain.messages.values()) m.set(attrs);
}

/** The state after a step, on the drain's spans (the last one set is the state the drain left). */
export function noteState(c: Loaded): void {
  const drain = drains.getStore();
  if (!drain) return;
  const state = { 'sealpost.state': String(c.snapshot.value) };
  drain.span.set(state);
  for (const m of drain.messages.values()) m.set(state);
}

/** The trace context a message's work in this drain belongs to: its span here, else `stored` (its row's). */
export function messageTrace(id: string, stored?: string | null): string | undefined {
  return drains.getStore()?.messages.get(id)?.traceparent ?? stored ?? undefined;
}

/**
 * A message failed (its `failed` status is being reported): a `sealpost.message failed` span in the message's
 * trace (`trace`: see {@link messageTrace}), failed with the Cloud API error code.
 */
export function traceFailure(wamid: string, trace: string | undefined, code: number | undefined): void {
  const span = tracingOn() ? startSpan('sealpost.message failed', { parent: trace ?? activeTraceparent(), attributes: { 'sealpost.wamid': wamid } }) : undefined;
  span?.fail({ name: 'MessageFailed', code: code ?? 0 });
  span?.end();
}

/**
 * Hands messages to the transport with a `transport send` span per message (parented to the message's
 * trace; `sealpost.devices`: how many device envelopes it carries), whose contexts the transport client's
 * batched HTTP request links to. A refused message's span carries the refusal: its Cloud API error code, or
 * `DevicesMismatched` for a 409/410.
 */
export async function tracedSend(messages: OutgoingDeviceMessage[], send: (traces: string[] | undefined) => Promise<MessageOutcome[]>): Promise<MessageOutcome[]> {
  if (!tracingOn()) return send(undefined);
  const spans = messages.map((m) => startSpan('transport send', {
    kind: 'producer', parent: messageTrace(m.id) ?? activeTraceparent(),
    attributes: { 'sealpost.wamid': m.id, 'sealpost.devices': m.envelopes.length, 'messaging.system': 'sealpost.transport', 'messaging.operation.type': 'send' },
  }));
  try {
    const result = await send(spans.flatMap((s) => (s?.traceparent ? [s.traceparent] : [])));
    for (const [i, r] of result.entries()) {
      if (r.outcome === 'unknown_recipient') spans[i]?.fail({ name: 'TransportRejected', code: 131026 });
      else if (r.outcome === 'refused') spans[i]?.fail({ name: 'TransportRejected', code: r.code });
      else if (r.outcome === 'mismatch' || r.outcome === 'stale') spans[i]?.fail({ name: 'DevicesMismatched' });
    }
    return result;
  } catch (e) {
    for (const s of spans) s?.fail(e);
    throw e;
  } finally {
    for (const s of spans) s?.end();
  }
}

/**
 * A request that serves several messages' traces (a batch of envelopes, a webhook POST): an HTTP client span
 * `{method}`, a child of `parent` (default: the active span) and linked to every trace in `traces`; with
 * `perMessage` also a span of that name in each of those traces, linked back to the request.
 */
export async function inBatchRequest<T>(
  method: string, url: URL | undefined, traces: string[], opts: { parent?: string; perMessage?: string; attributes?: SpanAttributes },
  fn: (span: TraceSpan | undefined) => Promise<T>,
): Promise<T> {
  if (!tracingOn()) return fn(undefined);
  const distinct = [...new Set(traces)];
  // The SDK keeps 128 links a span by default: a bigger batch links its first 128 messages.
  return inSpan(method, {
    kind: 'client', parent: opts.parent, links: distinct.slice(0, 128),
    attributes: { ...(url ? httpClientAttributes(method, url) : { 'http.request.method': method }), 'sealpost.batch_size': traces.length, ...opts.attributes },
  }, async (request) => {
    const each = opts.perMessage ? distinct.map((tp) => startSpan(opts.perMessage!, { parent: tp, links: [request?.traceparent], attributes: opts.attributes })) : [];
    try {
      return await fn(request);
    } catch (e) {
      for (const s of each) s?.fail(e);
      throw e;
    } finally {
      for (const s of each) s?.end();
    }
  });
}

/**
 * `fetch` for a request inside an HTTP client span (see {@link inBatchRequest}): it adds the URL and the answer's
 * status to the span and the trace context to the request's headers. Tracing off: `f` itself.
 */
export function tracedFetch(f: FetchLike = fetch): FetchLike {
  if (!tracingOn()) return f;
  return async (url, init) => {
    annotateActiveSpan(httpClientAttributes(init.method ?? 'GET', new URL(url)));
    const res = await f(url, { ...init, headers: injectTraceHeaders({ ...(init.headers as Record<string, string> | undefined) }) });
    annotateActiveSpan({ 'http.response.status_code': res.status });
    return res;
  };
}

/** The semantic conventions' attributes of an HTTP client request (the URL without its query string). */
export function httpClientAttributes(method: string, url: URL): SpanAttributes {
  return {
    'http.request.method': method, 'url.full': `${url.origin}${url.pathname}`, 'server.address': url.hostname,
    'server.port': Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
  };
}
