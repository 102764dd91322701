import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { bundleToWire, keyUploadFromWire } from '../signal/bundle.ts';
import {
  HttpError,
  ackSchema,
  address,
  deviceParamsSchema,
  envelopeSchema,
  envelopeBatchSchema,
  messageBatchSchema,
  messageSchema,
  parseOr400,
  pullSchema,
} from './schemas.ts';
import type { DeviceMessage, PlatformState } from './state.ts';

type Envelope = z.infer<typeof envelopeSchema>;

function addressParam(params: unknown): string {
  return parseOr400(address, (params as { address?: string }).address);
}

function deviceParam(params: unknown): number {
  return parseOr400(deviceParamsSchema, params).device_id;
}

/** 404 naming what is unknown: the whole address, or only this device of it. */
function unknownKeys(state: PlatformState, addr: string): { error: string } {
  return { error: state.directory.has(addr) ? 'unknown_device' : 'unknown_address' };
}

function notDown(state: PlatformState): void {
  if (state.faults.isDown()) throw new HttpError(503, 'platform_down');
}

/**
 * The router-facing API (`/v1`): the prekey directory, the envelope relay and the event queue. It is the
 * only way the router reaches the transport.
 */
export function routerApi(state: PlatformState) {
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/v1/keys/:address', async (req, reply) => {
      const addr = addressParam(req.params);
      const bundle = state.directory.take(addr);
      if (!bundle) return reply.code(404).send({ error: 'unknown_address' });
      return bundleToWire(addr, bundle);
    });

    app.get('/v1/keys/:address/count', async (req, reply) => {
      const counts = state.directory.count(addressParam(req.params));
      if (!counts) return reply.code(404).send({ error: 'unknown_address' });
      return counts;
    });

    // One device's bundle (same shape as above, `device_id` naming it); its one-time keys go out once each.
    app.get('/v1/keys/:address/:device_id', async (req, reply) => {
      const addr = addressParam(req.params);
      const bundle = state.directory.take(addr, deviceParam(req.params));
      if (!bundle) return reply.code(404).send(unknownKeys(state, addr));
      return bundleToWire(addr, bundle);
    });

    app.get('/v1/keys/:address/:device_id/count', async (req, reply) => {
      const addr = addressParam(req.params);
      const counts = state.directory.count(addr, deviceParam(req.params));
      if (!counts) return reply.code(404).send(unknownKeys(state, addr));
      return counts;
    });

    // The user's device list as the transport serves it (src/signal/device-list.ts): the primary's signed list,
    // with whatever the transport added on its own; the router verifies it against the pinned primary.
    app.get('/v1/devices/:address', async (req, reply) => {
      const account = state.account(addressParam(req.params));
      if (!account) return reply.code(404).send({ error: 'unknown_address' });
      return account.served();
    });

    // Answers the counts the directory now holds, so a publisher sees what it will hand out.
    app.put('/v1/keys/:address', async (req) => {
      const addr = addressParam(req.params);
      state.directory.publish(addr, keyUploadFromWire(req.body));
      return state.directory.count(addr);
    });

    /*
     * A single envelope to an unknown recipient is a 404 `{"error":"unknown_recipient","to"}`. A batch is
     * all-or-nothing on malformed input (400, nothing accepted) but per envelope on recipients: 202
     * `{"accepted":n,"rejected":[{"id","error":"unknown_recipient"}]}`, `rejected` always present.
     */
    app.post('/v1/envelopes', async (req, reply) => {
      notDown(state);
      const body = req.body as Record<string, unknown> | undefined;
      const isBatch = body !== null && typeof body === 'object' && 'envelopes' in body;
      const envelopes: Envelope[] = isBatch ? parseOr400(envelopeBatchSchema, body).envelopes : [parseOr400(envelopeSchema, body)];
      const rejected: { id: string; error: string }[] = [];
      let accepted = 0;
      for (const e of envelopes) {
        if (!state.hasDevice(e.to)) {
          if (!isBatch) return reply.code(404).send({ error: 'unknown_recipient', to: e.to });
          rejected.push({ id: e.id, error: 'unknown_recipient' });
          continue;
        }
        // Integrity: limits, blocks and policy (per envelope id: a retransmitted copy gets the same answer).
        const refusal = state.integrity.decide(e.id, e.from, e.to);
        if (refusal) {
          if (!isBatch) return reply.code(403).send({ error: refusal, to: e.to });
          rejected.push({ id: e.id, error: refusal });
          continue;
        }
        state.toDevice({ id: e.id, from: e.from, to: e.to, type: e.type, body: new Uint8Array(Buffer.from(e.body, 'base64')) });
        accepted++;
      }
      return reply.code(202).send(isBatch ? { accepted, rejected } : { accepted });
    });

    /*
     * A message to every device of a user, Signal-Server's way: `{"id","from","to","envelopes":[{"device_id",
     * "registration_id","type","body"}]}`, all or nothing. Single: 202 `{"accepted":1}`, or 404 unknown_recipient,
     * 410 `{"error":"stale_devices","stale"}`, 409 `{"error":"mismatched_devices","missing","extra"}`, 403 an
     * integrity refusal. Batch `{"messages":[...]}`: 400 on any malformed message (nothing taken), else 202
     * `{"accepted":n,"rejected":[{"id","error",...details}]}`.
     */
    app.post('/v1/messages', async (req, reply) => {
      notDown(state);
      const body = req.body as Record<string, unknown> | undefined;
      const isBatch = body !== null && typeof body === 'object' && 'messages' in body;
      const messages: DeviceMessage[] = isBatch ? parseOr400(messageBatchSchema, body).messages : [parseOr400(messageSchema, body)];
      const rejected: Record<string, unknown>[] = [];
      for (const m of messages) {
        const refusal = state.acceptMessage(m);
        if (!refusal) continue;
        if (!isBatch) return reply.code(refusal.status).send({ error: refusal.error, ...refusal.details });
        const { to: _to, ...details } = refusal.details; // a batch names the message by id, as /v1/envelopes does
        rejected.push({ id: m.id, error: refusal.error, ...details });
      }
      const accepted = messages.length - rejected.length;
      return reply.code(202).send(isBatch ? { accepted, rejected } : { accepted });
    });

    // Attachments: ciphertext only (the key travels inside the end-to-end encrypted message).
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: 110 << 20 }, (_req, body, done) => done(null, body));
    app.put('/v1/attachments', async (req, reply) => {
      notDown(state);
      if (!Buffer.isBuffer(req.body) || !req.body.length) return reply.code(400).send({ error: 'empty_attachment' });
      return { pointer: state.putBlob(req.body) };
    });
    app.get('/v1/attachments/:pointer', async (req, reply) => {
      const blob = state.blob((req.params as { pointer: string }).pointer);
      if (!blob) return reply.code(404).send({ error: 'unknown_attachment' });
      return reply.type('application/octet-stream').send(blob);
    });

    app.post('/v1/events/pull', async (req, reply) => {
      notDown(state);
      const opts = parseOr400(pullSchema, req.body);
      // A client that hangs up must not take events with it: its wait is cancelled before leasing any.
      const abort = new AbortController();
      const onClose = (): void => abort.abort();
      reply.raw.once('close', onClose);
      try {
        const events = await state.queue.pull({ max: opts.max, waitMs: opts.wait_ms, leaseMs: opts.lease_ms }, abort.signal);
        return { events };
      } finally {
        reply.raw.off('close', onClose);
      }
    });

    app.post('/v1/events/ack', async (req) => {
      const { event_ids } = parseOr400(ackSchema, req.body);
      return { acked: state.queue.ack(event_ids) };
    });
  };
}
