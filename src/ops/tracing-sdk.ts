import * as api from '@opentelemetry/api';
import { NodeSDK, resources } from '@opentelemetry/sdk-node';
import type { Span as BullSpan, Telemetry } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';

/**
 * The OpenTelemetry SDK, loaded only when tracing is on (src/ops/tracing.ts imports this file dynamically).
 * The SDK configures itself from the standard variables: the exporter and its protocol
 * (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL `http/protobuf` or `http/json`), the
 * sampler (OTEL_TRACES_SAMPLER[_ARG]), the batch span processor (OTEL_BSP_*), OTEL_SERVICE_NAME and
 * OTEL_RESOURCE_ATTRIBUTES. Only traces: no OpenTelemetry logs or metrics (Prometheus has /metrics).
 */
export function startSdk(opts: { serviceName?: string; defaultDetectors: boolean }): { api: typeof api; telemetry: Telemetry; shutdown: () => Promise<void> } {
  const sdk = new NodeSDK({
    ...(opts.serviceName ? { serviceName: opts.serviceName } : {}),
    instrumentations: [],
    // No OpenTelemetry log records: logs go through pino (with trace_id and span_id).
    logRecordProcessors: [],
    // The process detector would export the command line, which may hold a Redis URL with its password.
    ...(opts.defaultDetectors ? { resourceDetectors: [resources.envDetector, resources.hostDetector, resources.osDetector] } : {}),
  });
  sdk.start();
  return { api, telemetry: messagingTelemetry(new BullMQOtel({ tracerName: 'bullmq' }) as unknown as Telemetry<api.Context>), shutdown: () => sdk.shutdown() };
}

/** BullMQ's spans Sealpost keeps: a job added (`add {queue}.{name}`) and a job processed (`process {queue}`). */
const KEPT = /^(add|addBulk|process) (.+)$/;
/** Free text BullMQ would copy into spans (a job's result, a failure's message): never exported. */
const DROPPED = new Set(['bullmq.job.result', 'bullmq.job.failed.reason']);
const MESSAGING_OPERATION: Record<string, string> = { add: 'send', addBulk: 'send', process: 'process' };

const keep = (attrs: Record<string, unknown> = {}) => Object.fromEntries(Object.entries(attrs).filter(([k]) => !DROPPED.has(k))) as never;

/** What a span BullMQ does not get to export does: nothing, in the context it was given. */
const NOOP: BullSpan<api.Context> = {
  setSpanOnContext: (ctx) => ctx,
  setAttribute: () => undefined,
  setAttributes: () => undefined,
  addEvent: () => undefined,
  recordException: () => undefined,
  end: () => undefined,
};

/**
 * bullmq-otel, narrowed: only the spans of adding and processing jobs (not the worker's polling and
 * housekeeping, which would be a trace every few seconds), with the semantic conventions' messaging
 * attributes added, and without the free text BullMQ records (job results, failure messages, exceptions),
 * which could quote what a client sent.
 */
function messagingTelemetry(inner: Telemetry<api.Context>): Telemetry<api.Context> {
  return {
    contextManager: inner.contextManager,
    tracer: {
      startSpan(name, options, context) {
        const m = KEPT.exec(name);
        if (!m) return NOOP;
        const span = inner.tracer.startSpan(name, options, context);
        const destination = m[1] === 'process' ? m[2]! : m[2]!.replace(/\.[^.]*$/, '');
        span.setAttributes({
          'messaging.system': 'bullmq', 'messaging.operation.name': m[1]!, 'messaging.operation.type': MESSAGING_OPERATION[m[1]!]!,
          'messaging.destination.name': destination,
        });
        return {
          setSpanOnContext: (ctx) => span.setSpanOnContext(ctx),
          setAttribute: (k, v) => (DROPPED.has(k) ? undefined : span.setAttribute(k, v)),
          setAttributes: (attrs) => span.setAttributes(keep(attrs)),
          addEvent: (n, attrs) => span.addEvent(n, keep(attrs)),
          recordException: (e) => span.setAttribute('error.type', typeof e === 'object' && e && 'name' in e ? String(e.name) : 'Error'),
          end: () => span.end(),
        };
      },
    },
  };
}
