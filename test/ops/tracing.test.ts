import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tracingSettings } from '../../src/config.ts';
import { SealpostQueue } from '../../src/index.ts';
import { traced } from '../../src/runtime/trace-context.ts';
import { createDevice, deviceMessages, startSystem, userWrites, waitFor, type TestSystem } from '../helpers/system.ts';

/** A span as the OTLP/JSON exporter sends it, with its service. */
interface CollectedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
  events: { name: string }[];
}

type OtlpAttr = { key: string; value: Record<string, unknown> };
const attrs = (list: OtlpAttr[] = []) => Object.fromEntries(list.map((a) => [a.key, Object.values(a.value)[0]]));

/** A collector: accepts OTLP/JSON on /v1/traces, keeps every body as sent (for the privacy scan) and the spans. */
async function startCollector(): Promise<{ url: string; spans: CollectedSpan[]; bodies: string[]; server: Server }> {
  const spans: CollectedSpan[] = [];
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(404).end();
        return;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      bodies.push(text);
      for (const rs of JSON.parse(text).resourceSpans ?? []) {
        const service = String(attrs(rs.resource?.attributes)['service.name']);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service, traceId: s.traceId, spanId: s.spanId, ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}), name: s.name, kind: s.kind,
              attributes: attrs(s.attributes), links: (s.links ?? []).map((l: { traceId: string; spanId: string }) => ({ traceId: l.traceId, spanId: l.spanId })),
              events: s.events ?? [],
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, bodies, server };
}

// OTLP span kinds.
const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const CONSUMER = 5;

describe('tracing: one trace per message across the API, the queue, the drain, the transport and the webhook', () => {
  let sys: TestSystem;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  const children: ChildProcess[] = [];
  let api: { child: ChildProcess; out: string[]; url: string };
  let worker: { child: ChildProcess; out: string[] };

  const spawnRole = (role: 'api' | 'worker', env: Record<string, string>) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', role], { env: { ...sys.childEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout!.on('data', (d) => out.push(String(d)));
    child.stderr!.on('data', (d) => out.push(String(d)));
    children.push(child);
    return { child, out };
  };
  const stop = (child: ChildProcess) => new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });

  beforeAll(async () => {
    collector = await startCollector();
    sys = await startSystem({ workers: false });
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_TRACES_SAMPLER: 'always_on' };
    // The API exports every 100 ms; the worker's batch waits ten minutes, so its spans arrive only because
    // SIGTERM flushes them.
    const started = spawnRole('api', { ...otel, OTEL_BSP_SCHEDULE_DELAY: '100', PORT: '0', HOST: '127.0.0.1' });
    worker = spawnRole('worker', { ...otel, OTEL_BSP_SCHEDULE_DELAY: '600000', LOG_LEVEL: 'debug' });
    await waitFor(() => /API on (http:\/\/\S+)/.test(started.out.join('')), 'the traced API to listen', 60_000);
    api = { ...started, url: /API on (http:\/\/\S+)/.exec(started.out.join(''))![1]! };
  }, 120_000);

  afterAll(async () => {
    await Promise.all(children.map(stop));
    await sys?.close();
    collector?.server.close();
  });

  it('exports the spans of a message and of a user\'s reply, parented and linked as designed, with no phone number or text in them', async () => {
    const phone = '+15556100001';
    const waId = await createDevice(sys.platformUrl, phone);
    const inboundCanary = `inbound canary ${Date.now()}`;
    const inboundId = await userWrites(sys, waId, inboundCanary);
    const canary = `outbound canary ${Date.now()}`;
    const res = await fetch(`${api.url}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: waId, type: 'text', text: { body: canary } }),
    });
    expect(res.status).toBe(200);
    const wamid = ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
    // A template to a number with no device: it fails (131026), and its trace says so.
    const nobody = '+15556199999';
    const failing = await fetch(`${api.url}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: nobody, type: 'template', template: { name: 'hello_world', language: { code: 'en_US' } } }),
    });
    const failedWamid = ((await failing.json()) as { messages: { id: string }[] }).messages[0]!.id;
    // A message enqueued directly (the outbound queue): its trace starts at the job.
    const queuedCanary = `queued canary ${Date.now()}`;
    const producer = new SealpostQueue({ connection: { url: sys.redisUrl } as never, prefix: sys.prefix });
    const jobId = await producer.send(sys.business.phone_number_id, { messaging_product: 'whatsapp', to: waId, type: 'text', text: { body: queuedCanary } });
    const queuedWamid = ((await producer.result(jobId)) as { messages: { id: string }[] }).messages[0]!.id;
    await producer.close();
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).some((m) => m.id === queuedWamid), 'the device to show the queued message');
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).some((m) => m.id === wamid), 'the device to show the message');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === failedWamid && s.status === 'failed'), 'the failed webhook');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'the delivered webhook');
    // The API's spans arrive on their own; the worker's only with its shutdown.
    await waitFor(() => [wamid, failedWamid].every((id) => collector.spans.some((s) => s.attributes['sealpost.wamid'] === id && s.kind === SERVER)), 'the API spans');
    expect(collector.spans.some((s) => s.service === 'sealpost-worker')).toBe(false);
    expect(await stop(worker.child)).toBe(0);
    await waitFor(() => collector.spans.some((s) => s.service === 'sealpost-worker'), 'the worker spans, flushed at SIGTERM', 10_000);

    // The outbound message's trace.
    const server = collector.spans.find((s) => s.attributes['sealpost.wamid'] === wamid && s.kind === SERVER)!;
    expect(server).toMatchObject({
      service: 'sealpost-api', name: 'POST /:version/:phone_number_id/messages',
      attributes: {
        'http.request.method': 'POST', 'http.route': '/:version/:phone_number_id/messages', 'http.response.status_code': 200,
        'url.path': `/v23.0/${sys.business.phone_number_id}/messages`, 'sealpost.phone_number_id': sys.business.phone_number_id,
      },
    });
    expect(server.parentSpanId).toBeUndefined();
    const trace = collector.spans.filter((s) => s.traceId === server.traceId);
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const parentOf = (s: CollectedSpan) => (s.parentSpanId ? byId.get(s.parentSpanId) : undefined);
    const one = (pred: (s: CollectedSpan) => boolean, what: string) => {
      const found = trace.filter(pred);
      expect(found.map((s) => s.name), what).toHaveLength(1);
      return found[0]!;
    };
    // API → wake list: the shard's wake-up pushed inside the request, popped and run by the worker.
    // (A drain that finds events arrived meanwhile wakes the conversation again from within its loop: that
    // wake-up belongs to the trace too, but under the loop, not the request.)
    const add = one((s) => s.kind === PRODUCER && s.parentSpanId === server.spanId && s.name === 'sealpost.wake', 'wake-up pushed');
    expect(add).toMatchObject({ service: 'sealpost-api', parentSpanId: server.spanId, attributes: { 'messaging.system': 'redis', 'messaging.operation.type': 'send' } });
    expect(String(add.attributes['messaging.destination.name'])).toContain('{wake}');
    const processed = one((s) => s.kind === CONSUMER && s.parentSpanId === add.spanId, 'wake-up run');
    expect(processed).toMatchObject({ service: 'sealpost-worker', name: 'sealpost.wake', attributes: { 'messaging.system': 'redis', 'messaging.operation.type': 'process' } });
    // Wake-up → the conversation's drain, linked to the message's trace. (The wake-up is a shard's: the other
    // drains its loop ran, of this conversation's later events or of other conversations, are under it too.)
    const drain = one((s) => s.name === 'sealpost.drain' && s.parentSpanId === processed.spanId && s.links.some((l) => l.spanId === server.spanId), 'drain');
    expect(drain.links).toContainEqual({ traceId: server.traceId, spanId: server.spanId });
    expect(drain.attributes).toMatchObject({ 'sealpost.business_id': sys.business.business_id, 'sealpost.phone_number_id': sys.business.phone_number_id });
    expect(drain.attributes['sealpost.conversation_id']).toMatch(/\S/);
    expect(drain.attributes['sealpost.state']).toMatch(/\S/);
    // The message in the drain: its own span, parented to the request, linked to the drain.
    const send = one((s) => s.name === 'sealpost.conversation SEND', 'the SEND in the drain');
    expect(send).toMatchObject({ parentSpanId: server.spanId, attributes: { 'sealpost.wamid': wamid, 'sealpost.event': 'SEND' } });
    expect(send.links).toContainEqual({ traceId: server.traceId, spanId: drain.spanId });
    // Drain → transport: the hand-over of this wamid and the HTTP request that carried it.
    const handOver = one((s) => s.name === 'transport send', 'transport hand-over');
    expect(handOver).toMatchObject({ kind: PRODUCER, parentSpanId: send.spanId, attributes: { 'sealpost.wamid': wamid } });
    const request = one((s) => s.kind === CLIENT && String(s.attributes['url.full']).endsWith('/v1/messages'), 'HTTP request to the transport');
    expect(request).toMatchObject({ name: 'POST', parentSpanId: handOver.spanId, attributes: { 'http.request.method': 'POST', 'http.response.status_code': 202, 'server.address': '127.0.0.1' } });
    // Statuses → webhook: `sent` from the same drain (under its SEND), `delivered` from a later drain (then under
    // the request, the context kept in the message row) or from the same one, when the device's receipt was in
    // the mailbox by the time the transport's answer was committed: then one update carries both statuses and
    // one webhook span stands for them.
    const webhooks = trace.filter((s) => s.name === 'sealpost.webhook');
    expect(webhooks.length).toBeGreaterThanOrEqual(1);
    expect(webhooks.length).toBeLessThanOrEqual(2);
    expect(webhooks.map((s) => parentOf(s)?.name)).toContain('sealpost.conversation SEND');
    for (const w of webhooks) expect([send.spanId, server.spanId]).toContain(w.parentSpanId);
    for (const w of webhooks) {
      const post = collector.spans.find((s) => s.spanId === w.links[0]?.spanId)!;
      expect(post).toMatchObject({ kind: CLIENT, name: 'POST', attributes: { 'http.response.status_code': 200 } });
      expect(post.links).toContainEqual({ traceId: server.traceId, spanId: w.parentSpanId });
    }
    // One trace crossing both processes: API, wake-up, drain, transport, webhook.
    expect(new Set(trace.map((s) => s.service))).toEqual(new Set(['sealpost-api', 'sealpost-worker']));
    expect(trace.length).toBeGreaterThanOrEqual(8);

    // The user's message: from the transport's event to the business's webhook.
    const inbound = collector.spans.find((s) => s.name === 'sealpost.inbound' && s.attributes['sealpost.wamid'] === inboundId)!;
    expect(inbound).toMatchObject({ kind: CONSUMER, attributes: { 'sealpost.business_id': sys.business.business_id } });
    expect(inbound.parentSpanId).toBeUndefined();
    const inTrace = collector.spans.filter((s) => s.traceId === inbound.traceId);
    expect(inTrace.find((s) => s.name === 'sealpost.conversation ENVELOPE')).toMatchObject({ parentSpanId: inbound.spanId, attributes: { 'sealpost.wamid': inboundId } });
    expect(inTrace.some((s) => s.name === 'sealpost.drain')).toBe(true);
    expect(inTrace.some((s) => s.name === 'sealpost.webhook')).toBe(true);

    // The failed message: a span in its own trace carrying the Cloud API code the webhook reported.
    const failedServer = collector.spans.find((s) => s.kind === SERVER && s.attributes['sealpost.wamid'] === failedWamid)!;
    const failure = collector.spans.find((s) => s.name === 'sealpost.message failed' && s.attributes['sealpost.wamid'] === failedWamid)!;
    expect(failure).toMatchObject({ traceId: failedServer.traceId, attributes: { 'sealpost.error_code': '131026', 'error.type': 'MessageFailed' } });

    // The directly enqueued message: the outbound job's span, then the same path.
    const queuedSend = collector.spans.find((s) => s.name === 'sealpost.conversation SEND' && s.attributes['sealpost.wamid'] === queuedWamid)!;
    const job = collector.spans.find((s) => s.spanId === queuedSend.parentSpanId)!;
    expect(job).toMatchObject({ kind: CONSUMER, service: 'sealpost-worker', attributes: { 'messaging.system': 'bullmq', 'messaging.operation.type': 'process' } });
    expect(String(job.attributes['messaging.destination.name'])).toContain('outbound');
    expect(collector.spans.some((s) => s.traceId === job.traceId && s.name === 'transport send' && s.attributes['sealpost.wamid'] === queuedWamid)).toBe(true);

    // Privacy: nothing exported names a user or quotes a message.
    const exported = collector.bodies.join('\n');
    for (const secret of [waId, phone, nobody, nobody.slice(1), canary, inboundCanary, queuedCanary, 'outbound canary', 'inbound canary', 'queued canary']) expect(exported).not.toContain(secret);

    // Logs written inside a span carry its ids.
    const lines = worker.out.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const statusLines = lines.filter((l) => l.msg === 'message status' && l.wamid === wamid);
    expect(statusLines.length).toBeGreaterThan(0);
    for (const l of statusLines) {
      expect(l.trace_id).toMatch(/^[\da-f]{32}$/);
      expect(collector.spans.some((s) => s.traceId === l.trace_id && s.spanId === l.span_id)).toBe(true);
    }
  }, 180_000);
});

describe('tracing off: no endpoint, no SDK', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ workers: false });
  });
  afterAll(async () => sys?.close());

  /** Starts an API process in a child and reports which OpenTelemetry SDK modules it loaded. */
  const probe = async (env: Record<string, string>) => {
    const script = [
      "import { createRequire } from 'node:module';",
      "import { loadConfig } from './src/config.ts';",
      "import { start } from './src/serve.ts';",
      "const running = await start(loadConfig(process.env), process.env.REDIS_URL, { roles: ['api'], embedPlatform: false, demo: false });",
      "const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => /@opentelemetry[\\\\/]sdk-|bullmq-otel/.test(k));",
      'await running.close();',
      "process.stdout.write('PROBE ' + JSON.stringify(loaded) + '\\n');",
      'process.exit(0);',
    ].join('\n');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...sys.childEnv(), PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout!.on('data', (d) => out.push(String(d)));
    child.stderr!.on('data', (d) => out.push(String(d)));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    const line = /PROBE (.*)/.exec(out.join(''));
    expect(code, out.join('')).toBe(0);
    return JSON.parse(line![1]!) as string[];
  };

  it('loads no SDK module without an endpoint, and does with one (the probe sees what it checks)', async () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '' };
    expect(await probe(env)).toEqual([]);
    expect(await probe({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_SDK_DISABLED: 'true' })).toEqual([]);
    const on = await probe({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    expect(on.some((m) => /@opentelemetry[\\/]sdk-node/.test(m))).toBe(true);
  }, 180_000);

  it('is on only with an OTLP endpoint, and off again with OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none', () => {
    expect(tracingSettings({}).enabled).toBe(false);
    expect(tracingSettings({ OTEL_SERVICE_NAME: 'x', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).enabled).toBe(false);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).enabled).toBe(true);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' }).enabled).toBe(true);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'TRUE' }).enabled).toBe(false);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }).enabled).toBe(false);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SERVICE_NAME: 'edge-router' })).toMatchObject({ serviceNameSet: true, detectorsSet: false });
  });

  it('adds no trace field to a mailbox entry', () => {
    const event = { type: 'SEND' as const, wamid: 'wamid.x', at: 1 };
    expect(JSON.stringify(traced(event))).toBe(JSON.stringify(event));
  });
});
