import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { encryptAttachment } from '../media/attachment.ts';
import { MAX_MEDIA_BYTES } from '../media/store.ts';
import { MAX_COMPANIONS, type Account } from './account.ts';
import type { Device } from './device.ts';
import type { OutgoingMessage } from './device-model.ts';
import {
  HttpError,
  deviceListFaultSchema,
  deviceParamsSchema,
  deviceQuerySchema,
  faultsSchema,
  linkSchema,
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

function accountOf(state: PlatformState, params: unknown): Account {
  const raw = String((params as { wa_id?: string }).wa_id ?? '');
  const account = state.account(raw.replace(/^\+/, ''));
  if (!account) throw new HttpError(404, 'unknown_device');
  return account;
}

/** A device on the account now (the phone unless `deviceId` says otherwise): it can send and read. */
function deviceOf(state: PlatformState, params: unknown, deviceId = 1): Device {
  const device = accountOf(state, params).device(deviceId);
  if (!device) throw new HttpError(404, 'unknown_device');
  return device;
}

/** The device `?device=N` names (default the phone), on the account or unlinked since: its view stays readable. */
function viewOf(state: PlatformState, req: { params: unknown; query: unknown }): Device {
  const { device: deviceId } = parseOr400(deviceQuerySchema, req.query);
  const device = accountOf(state, req.params).view(deviceId);
  if (!device) throw new HttpError(404, 'unknown_device');
  return device;
}

/**
 * The Cloud API's inbound shape: a reply quotes `{from, id}` of the business's message, where the sim API
 * takes the send-side `{message_id}`.
 */
function outgoingMessage(body: ReturnType<typeof userMessageSchema.parse>, to: string): OutgoingMessage {
  const { to: _to, text, context, type, id: _id, device: _device, ...rest } = body;
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
    app.get('/sim/devices/:wa_id/sent', async (req) => ({ messages: viewOf(state, req).sent() }));

    // The phone's identity (as before), the account's devices and the counter of the primary's latest list.
    app.get('/sim/devices/:wa_id', async (req) => {
      const account = accountOf(state, req.params);
      const d = account.primary;
      return {
        wa_id: d.waId, registration_id: d.registrationId, identity_key: Buffer.from(d.identityKey).toString('base64'),
        devices: account.describe(), device_list_counter: account.counter, device_list_fault: account.fault,
      };
    });

    // `?device=N` (default 1): that device's view, each message once, in order, `arrivals` counted on that device.
    app.get('/sim/devices/:wa_id/messages', async (req) => ({ messages: viewOf(state, req).messages() }));

    app.get('/sim/devices/:wa_id/stats', async (req) => viewOf(state, req).stats());

    app.post('/sim/devices/:wa_id/messages', { bodyLimit: SIM_MESSAGE_BODY_LIMIT }, async (req) => {
      const body = parseOr400(userMessageSchema, req.body);
      const device = deviceOf(state, req.params, body.device);
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

    // The user reads on one of their devices (`device`, default 1): the read receipt comes from that device.
    app.post('/sim/devices/:wa_id/read', async (req) => {
      const body = parseOr400(readSchema, req.body);
      deviceOf(state, req.params, body.device).markRead(body.message_id);
      return { success: true };
    });

    // Test and demo hook: a device (`?device=N`, default the phone) loses its session state but keeps its identity.
    app.post('/sim/devices/:wa_id/forget-sessions', async (req) => {
      const { device } = parseOr400(deviceQuerySchema, req.query);
      await deviceOf(state, req.params, device).forgetSessions();
      return { success: true };
    });

    // The phone links a companion: its own identity, registration id and prekeys, the next unused device id,
    // and a device list the primary signs afresh (counter + 1).
    app.post('/sim/devices/:wa_id/linked', async (req) => {
      const account = accountOf(state, req.params);
      const { prekeys } = parseOr400(linkSchema, req.body);
      if (account.companions >= MAX_COMPANIONS) {
        throw new HttpError(400, `linked: the account already has ${MAX_COMPANIONS} linked companions, the most allowed; unlink one first`);
      }
      if (!account.hasFreeDeviceId) throw new HttpError(400, 'linked: no device ids left on this account (ids 2..127 are never reused)');
      return { device_id: account.link(prekeys).deviceId };
    });

    app.delete('/sim/devices/:wa_id/linked/:device_id', async (req) => {
      const account = accountOf(state, req.params);
      const result = account.unlink(parseOr400(deviceParamsSchema, req.params).device_id);
      if (result === 'primary') throw new HttpError(400, 'device_id: 1 is the phone (the primary); only companions can be unlinked');
      if (result === 'unknown') throw new HttpError(404, 'unknown_linked_device');
      return { success: true };
    });

    // A companion re-registers under the same device id: new identity and registration id, no sessions, and the
    // primary signs its new identity into the list (a sender's old session with it is stale: 410).
    app.post('/sim/devices/:wa_id/linked/:device_id/reinstall', async (req) => {
      const account = accountOf(state, req.params);
      const { prekeys } = parseOr400(linkSchema, req.body);
      const device = await account.reinstallCompanion(parseOr400(deviceParamsSchema, req.params).device_id, prekeys);
      if (!device) throw new HttpError(404, 'unknown_linked_device');
      return { device_id: device.deviceId, registration_id: device.registrationId, identity_key: Buffer.from(device.identityKey).toString('base64') };
    });

    // The transport, on its own, adds a device with keys it made to the list it serves, without the primary's
    // signature (it keeps the primary's, which does not cover the ghost). For tests of what the router refuses.
    app.post('/sim/devices/:wa_id/ghost', async (req) => {
      const account = accountOf(state, req.params);
      if (!account.hasFreeDeviceId) throw new HttpError(400, 'ghost: no device ids left on this account');
      return { device_id: account.ghost().deviceId };
    });

    // What `GET /v1/devices/{wa_id}` serves instead of the honest list: `forged` (the transport's own list signed
    // with its own key, counter + 1), `rollback` (the list the primary signed before its latest), null (honest).
    app.post('/sim/devices/:wa_id/device-list-fault', async (req) => {
      const account = accountOf(state, req.params);
      const { kind } = parseOr400(deviceListFaultSchema, req.body);
      if (kind === 'rollback' && !account.canRollBack) {
        throw new HttpError(400, 'kind: rollback needs an earlier list signed by the primary (link or unlink a device first)');
      }
      account.fault = kind;
      return { kind };
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
