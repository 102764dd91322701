import type { Context, Span, Tracer } from '@opentelemetry/api';
import type { Telemetry } from 'bullmq';

/**
 * Distributed tracing (OpenTelemetry), off unless an OTLP endpoint is configured. Everything here is a no-op
 * until {@link startTracing} has loaded the SDK (a dynamic import, so a process without an endpoint never
 * loads it): callers wrap their work unconditionally and pay one branch when tracing is off.
 *
 * Privacy: spans carry ids (conversation, wamid, business, phone_number_id), state names and error codes;
 * never message content and never a user's phone number. Errors are recorded by their name and code only,
 * never their message (a message may quote what a client sent).
 */

type OtelApi = typeof import('@opentelemetry/api');

/** Tracing settings, from the standard `OTEL_*` variables (config.ts reads them). */
export interface TracingSettings {
  /** An OTLP endpoint is set and the SDK is not disabled. */
  enabled: boolean;
  /** OTEL_SERVICE_NAME is set (the SDK reads it itself); otherwise Sealpost names the service after the role. */
  serviceNameSet: boolean;
  /** OTEL_NODE_RESOURCE_DETECTORS is set (the SDK reads it); otherwise Sealpost's defaults apply. */
  detectorsSet: boolean;
}

/** A span kind, by its semantic-conventions name. */
export type SpanKindName = 'internal' | 'server' | 'client' | 'producer' | 'consumer';

/** Attribute values; undefined ones are left out. */
export type SpanAttributes = Record<string, string | number | boolean | undefined>;

/** How to start a span. */
export interface SpanOptions {
  kind?: SpanKindName;
  attributes?: SpanAttributes;
  /** The parent as a W3C `traceparent`; undefined: the active span; null: a new trace. */
  parent?: string | null;
  /** Spans of other traces this one works for (W3C `traceparent`s; undefined entries are skipped). */
  links?: (string | undefined)[];
}

/** A started span, as Sealpost's code sees it (no OpenTelemetry types outside src/ops). */
export interface TraceSpan {
  /** This span as a W3C `traceparent`, to carry to another process. */
  readonly traceparent: string | undefined;
  set(attributes: SpanAttributes): void;
  /** Renames the span (a server span learns its route only once routed). */
  rename(name: string): void;
  /** Links a span of another trace (a `traceparent`). */
  link(traceparent: string | undefined): void;
  /** Marks the span failed: the error's name and, when it has one, its code (never its message). */
  fail(error: unknown): void;
  /** Runs `fn` with this span active (its children, logs and BullMQ jobs then belong to it). */
  run<T>(fn: () => T): T;
  end(): void;
}

let api: OtelApi | undefined;
let tracer: Tracer | undefined;
let bullTelemetry: Telemetry | undefined;
let shutdown: (() => Promise<void>) | undefined;

/**
 * Loads and starts the OpenTelemetry SDK when `settings.enabled` (else does nothing); true when tracing is on.
 * @example if (await startTracing(config.tracing, 'sealpost-worker')) closers.push(stopTracing);
 */
export async function startTracing(settings: TracingSettings, serviceName: string): Promise<boolean> {
  if (api) return true;
  if (!settings.enabled) return false;
  const { startSdk } = await import('./tracing-sdk.ts');
  const started = startSdk({ ...(settings.serviceNameSet ? {} : { serviceName }), defaultDetectors: !settings.detectorsSet });
  api = started.api;
  tracer = api.trace.getTracer('sealpost');
  bullTelemetry = started.telemetry;
  shutdown = started.shutdown;
  return true;
}

/** Flushes the spans still batched and stops the SDK (at process shutdown); a no-op when tracing is off. */
export async function stopTracing(): Promise<void> {
  const stop = shutdown;
  shutdown = undefined;
  await stop?.();
  api = undefined;
  tracer = undefined;
  bullTelemetry = undefined;
}

/** Whether tracing is on in this process. */
export function tracingOn(): boolean {
  return api !== undefined;
}

/** BullMQ's `telemetry` option (bullmq-otel) for a Queue or Worker while tracing is on, else nothing. */
export function queueTelemetry(): { telemetry?: Telemetry } {
  return bullTelemetry ? { telemetry: bullTelemetry } : {};
}

/** The active span as a W3C `traceparent`, or undefined (tracing off, or no span active). */
export function activeTraceparent(): string | undefined {
  if (!api || !api.trace.getSpan(api.context.active())) return undefined;
  return traceparentOf(api, api.context.active());
}

/** Whether a span is active (client spans are only made inside one: a poll loop alone makes no traces). */
export function spanActive(): boolean {
  return !!api && api.trace.getSpan(api.context.active()) !== undefined;
}

/** Adds the active trace context (`traceparent`) to outgoing HTTP headers. */
export function injectTraceHeaders(headers: Record<string, string>): Record<string, string> {
  if (api) api.propagation.inject(api.context.active(), headers);
  return headers;
}

/** For pino's `mixin`: the active span's ids, so a log line can be found from its trace and back. */
export function logTraceFields(): { trace_id?: string; span_id?: string } {
  const sc = api?.trace.getSpanContext(api.context.active());
  return sc ? { trace_id: sc.traceId, span_id: sc.spanId } : {};
}

/** Adds attributes to the active span (one made by Sealpost: the attributes are its own). */
export function annotateActiveSpan(attributes: SpanAttributes): void {
  api?.trace.getSpan(api.context.active())?.setAttributes(clean(attributes));
}

/** Runs `fn` with the span of `traceparent` (of this or another process) as the active context. */
export function runInTrace<T>(traceparent: string | undefined, fn: () => T): T {
  return api && traceparent ? api.context.with(contextOf(api, traceparent), fn) : fn();
}

/** Starts a span (not made active: see {@link TraceSpan.run}); undefined when tracing is off. */
export function startSpan(name: string, opts: SpanOptions = {}): TraceSpan | undefined {
  if (!api || !tracer) return undefined;
  const a = api;
  const parentCtx = opts.parent === undefined ? a.context.active() : opts.parent === null ? a.ROOT_CONTEXT : contextOf(a, opts.parent);
  const links = (opts.links ?? []).flatMap((tp) => {
    const sc = tp ? a.trace.getSpanContext(contextOf(a, tp)) : undefined;
    return sc ? [{ context: sc }] : [];
  });
  const span = tracer.startSpan(name, { kind: KINDS[opts.kind ?? 'internal'](a), attributes: clean(opts.attributes), links }, parentCtx);
  return new OtelTraceSpan(a, span, a.trace.setSpan(parentCtx, span));
}

/**
 * Runs `fn` in a new active span, ended when `fn` settles (failed if it throws). With tracing off it just
 * runs `fn` (its argument is then undefined).
 * @example await inSpan('sealpost.drain', { attributes: { 'sealpost.conversation_id': id } }, () => drain(id));
 */
export async function inSpan<T>(name: string, opts: SpanOptions, fn: (span: TraceSpan | undefined) => Promise<T>): Promise<T> {
  const span = startSpan(name, opts);
  if (!span) return fn(undefined);
  try {
    return await span.run(() => fn(span));
  } catch (e) {
    span.fail(e);
    throw e;
  } finally {
    span.end();
  }
}

const KINDS: Record<SpanKindName, (a: OtelApi) => number> = {
  internal: (a) => a.SpanKind.INTERNAL,
  server: (a) => a.SpanKind.SERVER,
  client: (a) => a.SpanKind.CLIENT,
  producer: (a) => a.SpanKind.PRODUCER,
  consumer: (a) => a.SpanKind.CONSUMER,
};

function clean(attributes: SpanAttributes | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(attributes ?? {})) if (v !== undefined) out[k] = v;
  return out;
}

function contextOf(a: OtelApi, traceparent: string): Context {
  return a.propagation.extract(a.ROOT_CONTEXT, { traceparent });
}

function traceparentOf(a: OtelApi, ctx: Context): string | undefined {
  const carrier: Record<string, string> = {};
  a.propagation.inject(ctx, carrier);
  return carrier.traceparent;
}

class OtelTraceSpan implements TraceSpan {
  constructor(private readonly a: OtelApi, private readonly span: Span, private readonly ctx: Context) {}

  get traceparent(): string | undefined {
    return traceparentOf(this.a, this.ctx);
  }

  set(attributes: SpanAttributes): void {
    this.span.setAttributes(clean(attributes));
  }

  rename(name: string): void {
    this.span.updateName(name);
  }

  link(traceparent: string | undefined): void {
    const sc = traceparent ? this.a.trace.getSpanContext(contextOf(this.a, traceparent)) : undefined;
    if (sc) this.span.addLink({ context: sc });
  }

  fail(error: unknown): void {
    const named = (error as { name?: unknown } | null)?.name;
    const name = typeof named === 'string' && named ? named : 'Error';
    const code = (error as { code?: unknown } | null)?.code;
    this.span.setAttributes({ 'error.type': name, ...(typeof code === 'number' || typeof code === 'string' ? { 'sealpost.error_code': String(code) } : {}) });
    this.span.setStatus({ code: this.a.SpanStatusCode.ERROR, message: name });
  }

  run<T>(fn: () => T): T {
    return this.a.context.with(this.ctx, fn);
  }

  end(): void {
    this.span.end();
  }
}
