/** Request validation of the platform's HTTP API: zod schemas and the one-line 4xx error they produce. */
import { z } from 'zod';
import { describeZodError } from '../signal/bundle.ts';
import { MAX_DEVICE_ID } from '../signal/device-list.ts';
import { MAX_GROUP_MEMBERS } from './groups.ts';

/** A request the platform refuses; answered as `{"error": message}` with `status`, plus `extra` fields. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Parses `value` or throws a 400 HttpError naming the first bad field. */
export function parseOr400<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw new HttpError(400, describeZodError(r.error));
  return r.data;
}

/** Longest long poll `POST /v1/events/pull` waits. */
export const MAX_WAIT_MS = 30_000;
/** Most envelopes in one `POST /v1/envelopes` batch. */
export const MAX_BATCH = 1000;

const E164 = /^\+?[1-9]\d{6,14}$/;

/**
 * Strips the separators people type in phone numbers and checks E.164; returns the digits (the wa_id).
 * @example phoneToWaId('+1 (555) 123-4567') // '15551234567'
 */
export function phoneToWaId(phone: string): string | null {
  const compact = phone.replace(/[\s\-()]/g, '');
  return E164.test(compact) ? compact.replace(/^\+/, '') : null;
}

/** A display phone number as people type it becomes the digits the directory uses; other addresses stay. */
export function normalizeAddress(a: string): string {
  return /^\+?[\d\s\-()]+$/.test(a) ? a.replace(/\D/g, '') : a;
}

/** Directory addresses and wa_ids: phone digits or a simple name (no slashes, no spaces). */
export const address = z.string().regex(/^[A-Za-z0-9._:+-]{1,128}$/, 'not a valid address');

const base64 = z
  .string()
  .min(4, 'empty ciphertext')
  .refine((s) => s.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(s), 'not standard base64');

/** One router → device envelope. */
export const envelopeSchema = z.object({
  id: z.string().min(1).max(256),
  from: address,
  to: address,
  type: z.union([z.literal(2), z.literal(3)], { error: 'type must be 2 (Whisper) or 3 (PreKey)' }),
  body: base64,
});

/** `POST /v1/envelopes` in its batch form `{"envelopes":[...]}`. */
export const envelopeBatchSchema = z.object({ envelopes: z.array(envelopeSchema).min(1).max(MAX_BATCH) });

/** A device id: 1 the phone, 2 and up its linked companions. */
const deviceId = z.number().int().min(1).max(MAX_DEVICE_ID);
/** A device id in a path or query string. */
const deviceIdText = z.coerce.number<string>().int().min(1).max(MAX_DEVICE_ID);

/** `GET /v1/keys/:address/:device_id` and the sim routes naming a device in their path. */
export const deviceParamsSchema = z.object({ device_id: deviceIdText });

/** `?device=N` on the sim routes that show one device (default 1, the phone). */
export const deviceQuerySchema = z.object({ device: deviceIdText.default(1) });

/** One device's envelope of a multi-device message (`POST /v1/messages`). */
export const deviceEnvelopeSchema = z.object({
  device_id: deviceId,
  registration_id: z.number().int().min(1).max(0xffffffff),
  type: z.union([z.literal(2), z.literal(3)], { error: 'type must be 2 (Whisper) or 3 (PreKey)' }),
  body: base64,
});

/** `POST /v1/messages`: one message, an envelope per device of the recipient (Signal-Server's send). */
export const messageSchema = z.object({
  id: z.string().min(1).max(256),
  from: address,
  to: address,
  envelopes: z.array(deviceEnvelopeSchema).min(1).max(MAX_DEVICE_ID).superRefine((envs, ctx) => {
    const seen = new Set<number>();
    for (const e of envs) {
      if (seen.has(e.device_id)) ctx.addIssue({ code: 'custom', message: `device_id ${e.device_id} appears twice` });
      seen.add(e.device_id);
    }
  }),
});

/** `POST /v1/messages` in its batch form `{"messages":[...]}`. */
export const messageBatchSchema = z.object({ messages: z.array(messageSchema).min(1).max(MAX_BATCH) });

/** `POST /v1/events/pull`; a larger `wait_ms` is capped at MAX_WAIT_MS. */
export const pullSchema = z.object({
  max: z.number().int().min(1).max(1000).default(100),
  wait_ms: z.number().int().min(0).default(1000).transform((n) => Math.min(n, MAX_WAIT_MS)),
  lease_ms: z.number().int().min(1).max(3_600_000).default(30_000),
});

/** `POST /v1/events/ack`. */
export const ackSchema = z.object({ event_ids: z.array(z.string().min(1)).max(10_000) });

/** `POST /sim/devices`. */
export const registerSchema = z.object({
  phone: z.string().min(1),
  prekeys: z.number().int().min(0).max(100).default(20),
  reinstall: z.boolean().default(false),
  /** The user's profile name, as businesses see it in `contacts[].profile.name`. */
  name: z.string().min(1).max(100).optional(),
  /** The user answers every message a business sends (for demos). */
  auto_reply: z.boolean().default(false),
});

/** `POST /sim/devices/:wa_id/messages`: `text`, or a structured Cloud API message by `type`. */
export const userMessageSchema = z.looseObject({
  to: z.string().min(1),
  type: z.string().min(1).max(64).optional(),
  text: z.string().min(1).max(4096).optional(),
  context: z.object({ message_id: z.string().min(1) }).optional(),
  /**
   * A modified phone choosing its own message id (any string up to 1,000 characters), for testing what the
   * router accepts: a real client makes a fresh `wamid.` id.
   */
  id: z.string().min(1).max(1000).optional(),
  /** Which of the user's devices writes (1, the phone, by default): that device's session encrypts it. */
  device: deviceId.default(1),
});

/** `POST /sim/devices/:wa_id/read`: the user reads a message on one of their devices (default the phone). */
export const readSchema = z.object({ message_id: z.string().min(1), device: deviceId.default(1) });

/** `POST /sim/devices/:wa_id/linked` (and `.../linked/:device_id/reinstall`): the new device's one-time key batch. */
export const linkSchema = z.strictObject({ prekeys: z.number().int().min(0).max(100).optional() });

/** `POST /sim/devices/:wa_id/device-list-fault`: what the transport serves instead of the honest list (null: the honest one). */
export const deviceListFaultSchema = z.strictObject({
  kind: z.enum(['forged', 'rollback'], { error: 'kind must be "forged", "rollback" or null' }).nullable(),
});

/** `POST /sim/devices/:wa_id/report-spam`. */
export const spamSchema = z.object({ from: z.string().min(1) });

/** `POST /sim/numbers/:number/integrity`: the platform operator sets a number's tier or policy block, or the thresholds. */
export const integritySchema = z.object({
  /** Start the number afresh before applying the rest. */
  reset: z.boolean().optional(),
  tier: z.number().int().min(0).max(4).optional(),
  blocked: z.boolean().optional(),
  settings: z.object({
    yellowRate: z.number().min(0).max(1).optional(),
    redRate: z.number().min(0).max(1).optional(),
    minSignals: z.number().int().min(1).optional(),
    blockAfterReports: z.number().int().min(1).optional(),
    perUserDaily: z.number().int().min(1).optional(),
    tiers: z.array(z.number().int().min(1)).length(4).optional(),
    upgradeAfterMs: z.number().int().min(0).optional(),
  }).strict().optional(),
}).strict();

/** `POST /sim/faults`: every field optional; `{}` clears all. */
export const faultsSchema = z.strictObject({
  drop: z.number().min(0).max(1).optional(),
  duplicate: z.number().min(0).max(1).optional(),
  reorder: z.boolean().optional(),
  delay_ms: z.number().int().min(0).max(600_000).optional(),
  down_for_ms: z.number().int().min(0).max(3_600_000).optional(),
  corrupt: z.number().min(0).max(1).optional(),
  corrupt_next: z.number().int().min(0).max(1_000_000).optional(),
});

/** A group id as the router names it (base64-like, no slashes: it travels in paths). */
export const groupId = z.string().regex(/^[A-Za-z0-9._:+=-]{1,128}$/, 'not a valid group id');

/** `/v1/groups/:group_id` and `/sim/devices/:wa_id/groups/:group_id/...` path parameters. */
export const groupParamsSchema = z.object({ group_id: groupId });

/** `PUT /v1/groups/:group_id`: the router registers (or replaces) a group and its member list. */
export const groupSchema = z.object({
  owner: address,
  invite_code: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, 'letters, digits, _ or - (1 to 128)'),
  join_approval: z.enum(['auto_approve', 'approval_required'], { error: 'must be "auto_approve" or "approval_required"' }),
  members: z.array(address).max(MAX_GROUP_MEMBERS, `at most ${MAX_GROUP_MEMBERS} members`).superRefine((ms, ctx) => {
    const seen = new Set<string>();
    for (const m of ms) {
      if (seen.has(m)) ctx.addIssue({ code: 'custom', message: `${m} appears twice` });
      seen.add(m);
    }
  }),
});

/** One group message from the business (`POST /v1/groups/:group_id/messages`): a SenderKeyMessage. */
export const groupMessageSchema = z.object({
  id: z.string().min(1).max(256),
  from: address,
  type: z.literal(7, { error: 'type must be 7 (SenderKey)' }),
  body: base64,
});

/** `POST /v1/groups/:group_id/messages` in its batch form `{"messages":[...]}`. */
export const groupMessageBatchSchema = z.object({ messages: z.array(groupMessageSchema).min(1).max(MAX_BATCH) });

/** `POST /sim/devices/:wa_id/groups/join`. */
export const joinSchema = z.object({ invite_link: z.string().min(1).max(512) });

/** `POST /sim/devices/:wa_id/groups/:group_id/messages`: the user's phone writes text to the group. */
export const groupTextSchema = z.object({ text: z.string().min(1).max(4096) });
