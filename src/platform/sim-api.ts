import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { encryptAttachment } from '../media/attachment.ts';
import { MAX_MEDIA_BYTES } from '../media/store.ts';
import type { Device } from './device.ts';
import type { OutgoingMessage } from './device-model.ts';
import {
  HttpError,
  faultsSchema,
  normalizeAddress,
  parseOr400,
  phoneToWaId,
  readSchema,
  registerSchema,
  spamSchema,
  integritySchema,
  userMessageSchema,
} from './schemas.ts';
import type { PlatformState } from './state.ts';

function deviceOf(state: PlatformState, params: unknown): Device {
  const raw = String((params as { wa_id?: string }).wa_id ?? '');
  const device = state.device(raw.replace(/^\+/, ''));
  if (!device) throw new HttpError(404, 'unknown_device');
  return device;
}

/**
 * The Cloud API's inbound shape: a reply quotes `{from, id}` of the business's message, where the sim API
 * takes the send-side `{message_id}`.
 */
function outgoingMessage(body: ReturnType<typeof userMessageSchema.parse>, to: string): OutgoingMessage {
  const { to: _to, text, context, type, id: _id, ...rest } = body;
  const kind = type ?? 'text';
  if (kind === 'text' && text === undefined) throw new HttpError(400, 'text: required for a text message');
  const message: OutgoingMessage = { ...rest, type: kind };
  if (kind === 'text') message.text = { body: text };
  if (context) message.context = { from: to, id: context.message_id };
  return message;
}

/**
 * The largest body of `POST /sim/devices/{wa_id}/messages`: a user's file travels as base64 in the JSON, so room
 * for the largest file the Cloud API takes and some beyond it (a user may send what the router must refuse),
 * still bounded. The platform's other routes keep its smaller default.
 */
export const SIM_MESSAGE_BODY_LIMIT = Math.ceil(((MAX_MEDIA_BYTES + (8 << 20)) * 4) / 3) + (1 << 20);

/** The simulation API (`/sim`): devices and their users, and the transport's fault switches. */
export function simApi(state: PlatformState) {
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/sim/devices', async (req) => {
      const body = parseOr400(registerSchema, req.body);
      const waId = phoneToWaId(body.phone);
      if (!waId) throw new HttpError(400, 'phone: not an E.164 number (optional +, 7 to 15 digits, no leading 0)');
      await state.registerDevice(waId, { prekeys: body.prekeys, reinstall: body.reinstall, autoReply: body.auto_reply, ...(body.name ? { name: body.name } : {}) });
      return { wa_id: waId };
    });

    // What the user sent, and whether the business has read it (the router's encrypted read receipts).
    app.get('/sim/devices/:wa_id/sent', async (req) => ({ messages: deviceOf(state, req.params).sent() }));

    app.get('/sim/devices/:wa_id', async (req) => {
      const d = deviceOf(state, req.params);
      return { wa_id: d.waId, registration_id: d.registrationId, identity_key: Buffer.from(d.identityKey).toString('base64') };
    });

    app.get('/sim/devices/:wa_id/messages', async (req) => ({ messages: deviceOf(state, req.params).messages() }));

    app.get('/sim/devices/:wa_id/stats', async (req) => deviceOf(state, req.params).stats());

    app.post('/sim/devices/:wa_id/messages', { bodyLimit: SIM_MESSAGE_BODY_LIMIT }, async (req) => {
      const device = deviceOf(state, req.params);
      const body = parseOr400(userMessageSchema, req.body);
      const to = normalizeAddress(body.to);
      const message = outgoingMessage(body, to);
      // The user sends a file (`{"type":"image","image":{"data": base64, "mime_type", "caption"?}}`): the phone
      // encrypts it with a fresh key and uploads only the ciphertext; the key rides in the Signal message.
      const kind = String(message.type);
      const part = (message as Record<string, unknown>)[kind] as { data?: unknown; mime_type?: unknown } | undefined;
      if (part && typeof part.data === 'string') {
        const bytes = Buffer.from(part.data, 'base64');
        if (!bytes.length || typeof part.mime_type !== 'string') throw new HttpError(400, `${kind}: data (base64) and mime_type are required`);
        const enc = encryptAttachment(bytes);
        const { data: _d, ...rest } = part;
        (message as Record<string, unknown>)[kind] = {
          ...rest,
          attachment: {
            pointer: state.putBlob(enc.ciphertext), key: enc.key.toString('base64'), iv: enc.iv.toString('base64'), digest: enc.digest,
            mime_type: part.mime_type, sha256: createHash('sha256').update(bytes).digest('base64'), file_size: bytes.length,
          },
        };
      }
      const id = await device.send(to, message, body.id);
      // The user wrote: the business's customer-service window with them is open for 24 h.
      state.integrity.inbound(to, device.waId);
      return { id };
    });

    app.post('/sim/devices/:wa_id/read', async (req) => {
      const device = deviceOf(state, req.params);
      device.markRead(parseOr400(readSchema, req.body).message_id);
      return { success: true };
    });

    // Test and demo hook: the phone loses its session state (e.g. restored from a backup) but keeps its identity.
    app.post('/sim/devices/:wa_id/forget-sessions', async (req) => {
      await deviceOf(state, req.params).forgetSessions();
      return { success: true };
    });

    // The user reports a business number as spam (which blocks it too, as the apps do), blocks or unblocks
    // it. The transport keeps these to itself; the router learns only the number's resulting standing.
    app.post('/sim/devices/:wa_id/report-spam', async (req) => {
      const device = deviceOf(state, req.params);
      state.integrity.report(normalizeAddress(parseOr400(spamSchema, req.body).from), device.waId);
      return { success: true };
    });
    app.post('/sim/devices/:wa_id/block', async (req) => {
      const device = deviceOf(state, req.params);
      state.integrity.block(normalizeAddress(parseOr400(spamSchema, req.body).from), device.waId);
      return { success: true };
    });
    app.post('/sim/devices/:wa_id/unblock', async (req) => {
      const device = deviceOf(state, req.params);
      state.integrity.unblock(normalizeAddress(parseOr400(spamSchema, req.body).from), device.waId);
      return { success: true };
    });

    // The platform operator's view and controls of a business number's standing (tests and demos).
    app.get('/sim/numbers/:number/integrity', async (req) => state.integrity.standing(normalizeAddress((req.params as { number: string }).number)));
    app.post('/sim/numbers/:number/integrity', async (req) => {
      const number = normalizeAddress((req.params as { number: string }).number);
      const body = parseOr400(integritySchema, req.body);
      if (body.reset) state.integrity.reset(number);
      if (body.settings) state.integrity.settings = { ...state.integrity.settings, ...body.settings };
      if (body.tier !== undefined || body.blocked !== undefined) state.integrity.set(number, { ...(body.tier !== undefined ? { tier: body.tier } : {}), ...(body.blocked !== undefined ? { blocked: body.blocked } : {}) });
      return state.integrity.standing(number);
    });

    // With `dropped`: how many copies were lost since the faults were set.
    app.get('/sim/faults', async () => ({ ...state.faults.get(), dropped: state.faults.dropped }));

    app.post('/sim/faults', async (req) => state.faults.set(parseOr400(faultsSchema, req.body)));
  };
}
