import { z } from 'zod';
import { parseDuration } from '../../config.ts';
import { MAX_RETENTION_MS } from '../../store/businesses.ts';

/**
 * The admin API's request and answer schemas. Requests are parsed with them in admin.ts before the provisioning
 * service sees anything (it checks again, and what a schema cannot: the webhook's subscription check, where a
 * URL leads, which numbers a business has), with the service's own wording, so a refusal reads the same either
 * way. The OpenAPI document is generated from them.
 */

/** A string of `min` to `max` characters with something besides whitespace (the provisioning rule). */
function text(field: string, min = 1, max = 200) {
  const error = `${field} must be a string of ${min} to ${max} characters`;
  return z.string({ error })
    .refine((s) => s.trim().length >= min, { error, abort: true })
    .refine((s) => s.length <= max, { error })
    .meta({ minLength: min, maxLength: max, pattern: '\\S' });
}

/** An http(s) URL. */
function httpUrl(field: string) {
  const error = `${field} must be an http(s) URL`;
  return z.string({ error }).refine((s) => {
    try {
      return ['http:', 'https:'].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  }, { error }).meta({ format: 'uri', pattern: '^https?://' });
}

/** A retention: a duration up to 30 days (`30d`, `12h`, `10m`; a bare number is milliseconds). */
const Retention = z.union([z.string(), z.number()], { error: 'retention must be a duration up to 30d (e.g. 30d, 12h, 10m)' }).refine((v) => {
  try {
    const ms = parseDuration(String(v));
    return ms > 0 && ms <= MAX_RETENTION_MS;
  } catch {
    return false;
  }
}, { error: 'retention must be a duration up to 30d (e.g. 30d, 12h, 10m)' }).meta({ description: 'A duration up to 30d: 30d, 12h, 10m, 5s, 250ms (a bare number is milliseconds). Default SEALPOST_RETENTION.', examples: ['7d'] });

const body = <T extends z.core.$ZodLooseShape>(shape: T) => z.object(shape, { error: 'Request body must be a JSON object' });

/** `POST /admin/businesses`. */
export const CreateBusinessBody = body({
  name: text('name'),
  webhook_url: httpUrl('webhook_url').meta({ description: 'Must pass the subscription check (GET with hub.challenge, answered 200 with the challenge).' }),
  app_secret: text('app_secret', 8).meta({ description: 'Signs webhook deliveries (X-Hub-Signature-256); never shown again.' }),
  verify_token: text('verify_token'),
  retention: Retention.optional(),
});

/** `PATCH /admin/businesses/{business_id}`: a webhook URL changes together with its verify token. */
export const PatchBusinessBody = body({
  name: text('name').optional(),
  retention: Retention.optional(),
  webhook_url: httpUrl('webhook_url').optional(),
  verify_token: text('verify_token').optional(),
});

/** `POST /admin/businesses/{business_id}/app_secret`: a chosen secret, or none to have one generated (shown once). */
export const AppSecretBody = body({ app_secret: text('app_secret', 8).optional() });

/** `POST /admin/businesses/{business_id}/phone_numbers`. */
export const AddNumberBody = body({ verified_name: text('verified_name').optional().meta({ description: 'Default: the business name.' }) });

/** `PATCH …/phone_numbers/{phone_number_id}`: the number's own webhook, or `null` for its business's again. */
export const NumberWebhookBody = body({
  webhook_url: httpUrl('webhook_url').nullable(),
  verify_token: text('verify_token').optional().meta({ description: 'Required with a webhook_url.' }),
});

/** `POST /admin/businesses/{business_id}/tokens`. */
export const IssueTokenBody = body({
  expires_in: z.number({ error: 'expires_in must be a whole number of seconds' }).int({ error: 'expires_in must be a whole number of seconds' })
    .positive({ error: 'expires_in must be a whole number of seconds' }).optional().meta({ description: 'Seconds until the token expires; default never.' }),
});

const DAY_ERROR = 'from and to must be days (YYYY-MM-DD), from <= to';
/** `GET …/stats`: days from `from` to `to` (default the last 7 days). */
export const StatsQuery = z.object({
  from: z.string({ error: DAY_ERROR }).regex(/^\d{4}-\d{2}-\d{2}$/, { error: DAY_ERROR }).optional(),
  to: z.string({ error: DAY_ERROR }).regex(/^\d{4}-\d{2}-\d{2}$/, { error: DAY_ERROR }).optional(),
});

/** `GET …/billing`: one month (default the current one). */
export const BillingQuery = z.object({ month: z.string({ error: 'month must be YYYY-MM' }).regex(/^\d{4}-\d{2}$/, { error: 'month must be YYYY-MM' }).optional() });

/** `GET`/`DELETE …/users/{wa_id}`: which of the business's numbers (default its first). */
export const UserQuery = z.object({ phone_number_id: z.string({ error: 'phone_number_id is not one of this business\'s numbers' }).optional() });

/** A user's number as the data requests take it: digits only. */
export const WaIdParam = z.string().regex(/^[1-9]\d{6,14}$/, { error: 'wa_id must be the user\'s number, digits only' });

// Answers.

const Success = z.object({ success: z.literal(true) });

/** A business's settings (never its secrets). */
const BusinessInfo = z.object({
  business_id: z.string(), name: z.string(), waba_id: z.string(), retention_ms: z.number().int().nullable(),
  region: z.string().nullable(), storage: z.enum(['default', 'none']),
});

/** A number as the Business Manager shows it. */
export const NumberDetails = z.object({
  phone_number_id: z.string(), display_phone_number: z.string(), verified_name: z.string(), quality_rating: z.enum(['GREEN', 'YELLOW', 'RED']),
  messaging_limit: z.string(), blocked: z.boolean(), messages_per_second: z.number(), webhook_url: z.string().nullable(),
});

/** The answers, by name (each becomes a component of the OpenAPI document). */
export const ADMIN_ANSWERS = {
  Success,
  CreatedBusiness: z.object({ business_id: z.string(), waba_id: z.string(), phone_number_id: z.string(), display_phone_number: z.string(), access_token: z.string() }).meta({ description: 'The business and its first number; the access token is shown only here.' }),
  BusinessList: z.object({ businesses: z.array(BusinessInfo.extend({ phone_numbers: z.array(z.string()) })) }),
  Business: BusinessInfo.extend({ phone_numbers: z.array(NumberDetails) }),
  AppSecretRotated: z.object({ success: z.literal(true), app_secret: z.string().optional().meta({ description: 'Only when generated here (shown once).' }) }),
  DataKeyRotated: z.object({ success: z.literal(true), version: z.number().int(), active_at: z.number().int().meta({ description: 'ms since the epoch; sealing with the new version starts then.' }) }),
  NumberList: z.object({ data: z.array(NumberDetails) }),
  AddedNumber: z.object({ phone_number_id: z.string(), display_phone_number: z.string() }),
  TokenList: z.object({ business_id: z.string(), tokens: z.array(z.object({ token_id: z.string(), created_at: z.number().int(), expires_at: z.number().int().nullable(), revoked: z.boolean() })) }),
  IssuedToken: z.object({ access_token: z.string(), token_id: z.string(), expires_at: z.number().int().nullable() }),
  Stats: z.object({
    business_id: z.string(),
    days: z.array(z.object({ day: z.string(), accepted: z.number().int(), sent: z.number().int(), delivered: z.number().int(), read: z.number().int(), inbound: z.number().int(), failed: z.record(z.string(), z.number().int()) })),
  }).meta({ description: 'Aggregates only.' }),
  Billing: z.object({ business_id: z.string(), month: z.string(), billable: z.record(z.string(), z.number().int()), free: z.record(z.string(), z.number().int()) }),
  UserExport: z.object({
    business_id: z.string(), phone_number_id: z.string(), wa_id: z.string(), conversation_id: z.string(), last_inbound_at: z.number().int().nullable(),
    messages: z.array(z.object({
      id: z.string(), direction: z.enum(['inbound', 'outbound']), at: z.number().int(), retained_until: z.number().int().nullable(),
      message: z.record(z.string(), z.unknown()).optional(), biz_opaque_callback_data: z.string().optional(),
    })),
  }).meta({ description: 'Everything Sealpost holds about one user for one business (a data request).' }),
  UserErased: z.object({ success: z.literal(true), erased: z.boolean() }),
} as const;
