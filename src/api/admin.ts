import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { DataRequests } from '../runtime/data-requests.ts';
import { MAX_RETENTION_MS, type BusinessStore } from '../store/businesses.ts';
import type { Stats } from '../store/stats.ts';
import { InvalidParameterError, UnknownObjectError } from '../runtime/graph-errors.ts';
import { checkAdmin } from '../ops/admin-auth.ts';
import { randomBytes } from 'node:crypto';
import { parseDuration } from '../config.ts';
import { verifySubscription } from '../webhook/subscription.ts';
import { webhookUrlProblem } from '../webhook/egress.ts';

/** What the admin routes need. */
export interface AdminDeps {
  /** SEALPOST_ADMIN_TOKEN; without one the admin API refuses every request. */
  token?: string;
  businesses: BusinessStore;
  stats: Stats;
  data: DataRequests;
  /** Publishes a new number's prekeys on the transport (so users can write to it at once). */
  publisher?: { ensure(phoneNumberId: string): Promise<boolean> };
  /** Adds data key versions (`POST .../data-key/rotate`; the route exists only when given). */
  dataKeys?: { rotate(businessId: string): Promise<{ version: number; activeAt: number }> };
  /** The webhook subscription check (default: GET hub.challenge against the URL). */
  verify?: (url: string, verifyToken: string) => Promise<{ ok: boolean; reason?: string }>;
  /** SEALPOST_WEBHOOK_DENY_PRIVATE: webhook URLs reaching loopback, private or link-local addresses are refused. */
  denyPrivate?: boolean;
}


/** An http(s) URL, or a 100 naming the field. */
function httpUrl(v: unknown, field: string): string {
  try {
    const u = new URL(String(v));
    if (u.protocol === 'http:' || u.protocol === 'https:') return u.toString();
  } catch { /* below */ }
  throw new InvalidParameterError(`${field} must be an http(s) URL`);
}

function text(v: unknown, field: string, min = 1, max = 200): string {
  if (typeof v !== 'string' || v.trim().length < min || v.length > max) throw new InvalidParameterError(`${field} must be a string of ${min} to ${max} characters`);
  return v;
}

function retentionOf(v: unknown): number {
  try {
    const ms = parseDuration(String(v));
    if (ms > 0 && ms <= MAX_RETENTION_MS) return ms;
  } catch { /* below */ }
  throw new InvalidParameterError('retention must be a duration up to 30d (e.g. 30d, 12h, 10m)');
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const MONTH = /^\d{4}-\d{2}$/;

/**
 * Admin routes (behind the admin token): statistics and billing per business, and data requests (export,
 * erase) for one user of one business.
 */
export function adminRoutes(deps: AdminDeps) {
  return (app: FastifyInstance): void => {
    const business = async (id: string, req: FastifyRequest) => {
      if (!(await deps.businesses.info(id))) throw new UnknownObjectError(id.slice(0, 40), req.method === 'POST' || req.method === 'DELETE' ? req.method : 'GET');
      return id;
    };
    const onRequest = async (req: FastifyRequest) => checkAdmin(req, deps.token);
    const verify = deps.verify ?? ((url: string, token: string) => verifySubscription(url, token, { timeoutMs: 10_000, denyPrivate: deps.denyPrivate ?? false }));
    const checked = async (url: string, verifyToken: string) => {
      // Where the URL leads is checked before anything is sent there.
      const problem = await webhookUrlProblem(url, deps.denyPrivate ?? false);
      if (problem) throw new InvalidParameterError(`webhook_url refused: ${problem}`);
      const check = await verify(url, verifyToken);
      if (!check.ok) throw new InvalidParameterError(`webhook subscription check failed: ${check.reason ?? 'no challenge echoed'}`);
    };
    const numberDetails = async (pnId: string) => {
      const pn = await deps.businesses.phoneNumber(pnId);
      if (!pn) return null;
      return {
        phone_number_id: pn.phone_number_id, display_phone_number: pn.display_phone_number, verified_name: pn.verified_name,
        quality_rating: pn.quality_rating, messaging_limit: pn.messaging_limit_tier, blocked: pn.blocked, messages_per_second: pn.messages_per_second,
        webhook_url: await deps.businesses.numberWebhookUrl(pnId),
      };
    };

    // The Business Manager: businesses, their numbers, webhooks and app secrets. Secrets are accepted, never shown.
    app.get('/admin/businesses', { onRequest }, async () => ({ businesses: await deps.businesses.list() }));

    app.post('/admin/businesses', { onRequest }, async (req) => {
      const b = (req.body ?? {}) as Record<string, unknown>;
      const name = text(b.name, 'name');
      const webhookUrl = httpUrl(b.webhook_url, 'webhook_url');
      const appSecret = text(b.app_secret, 'app_secret', 8);
      const verifyToken = text(b.verify_token, 'verify_token');
      const retentionMs = b.retention !== undefined ? retentionOf(b.retention) : undefined;
      await checked(webhookUrl, verifyToken);
      const created = await deps.businesses.create({ name, webhookUrl, appSecret, verifyToken, ...(retentionMs ? { retentionMs } : {}) });
      await deps.publisher?.ensure(created.phone_number_id);
      return created;
    });

    app.get('/admin/businesses/:business_id', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const numbers = await Promise.all((await deps.businesses.numbersOf(id)).map(numberDetails));
      return { ...(await deps.businesses.info(id)), phone_numbers: numbers.filter(Boolean) };
    });

    app.patch('/admin/businesses/:business_id', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const b = (req.body ?? {}) as Record<string, unknown>;
      const patch: { name?: string; webhookUrl?: string; verifyToken?: string; retentionMs?: number } = {};
      if (b.name !== undefined) patch.name = text(b.name, 'name');
      if (b.retention !== undefined) patch.retentionMs = retentionOf(b.retention);
      if (b.webhook_url !== undefined || b.verify_token !== undefined) {
        if (b.webhook_url === undefined || b.verify_token === undefined) throw new InvalidParameterError('webhook_url and verify_token change together (the new URL is checked with the token)');
        patch.webhookUrl = httpUrl(b.webhook_url, 'webhook_url');
        patch.verifyToken = text(b.verify_token, 'verify_token');
        await checked(patch.webhookUrl, patch.verifyToken);
      }
      if (!Object.keys(patch).length) throw new InvalidParameterError('nothing to change: name, retention, webhook_url with verify_token');
      await deps.businesses.update(id, patch);
      return { success: true };
    });

    app.delete('/admin/businesses/:business_id', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      return { success: await deps.businesses.delete(id) };
    });

    app.post('/admin/businesses/:business_id/app_secret', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const given = ((req.body ?? {}) as Record<string, unknown>).app_secret;
      const secret = given === undefined ? randomBytes(24).toString('hex') : text(given, 'app_secret', 8);
      await deps.businesses.rotateAppSecret(id, secret);
      // Shown once when generated here; a secret the caller chose is not echoed.
      return given === undefined ? { success: true, app_secret: secret } : { success: true };
    });

    // A new data key version; it starts sealing once every process has read it (`active_at`, ms since the epoch).
    const dataKeys = deps.dataKeys;
    if (dataKeys) {
      app.post('/admin/businesses/:business_id/data-key/rotate', { onRequest }, async (req) => {
        const id = await business((req.params as { business_id: string }).business_id, req);
        const { version, activeAt } = await dataKeys.rotate(id);
        return { success: true, version, active_at: activeAt };
      });
    }

    app.get('/admin/businesses/:business_id/phone_numbers', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      return { data: (await Promise.all((await deps.businesses.numbersOf(id)).map(numberDetails))).filter(Boolean) };
    });

    app.post('/admin/businesses/:business_id/phone_numbers', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const b = (req.body ?? {}) as Record<string, unknown>;
      const added = await deps.businesses.addNumber(id, b.verified_name !== undefined ? { verifiedName: text(b.verified_name, 'verified_name') } : {});
      await deps.publisher?.ensure(added.phone_number_id);
      return added;
    });

    const ownNumber = async (req: FastifyRequest) => {
      const p = req.params as { business_id: string; phone_number_id: string };
      const id = await business(p.business_id, req);
      if (!(await deps.businesses.numbersOf(id)).includes(p.phone_number_id)) throw new InvalidParameterError('phone_number_id is not one of this business\'s numbers', 404);
      return { id, pn: p.phone_number_id };
    };

    app.patch('/admin/businesses/:business_id/phone_numbers/:phone_number_id', { onRequest }, async (req) => {
      const { pn } = await ownNumber(req);
      const b = (req.body ?? {}) as Record<string, unknown>;
      if (b.webhook_url === null) {
        await deps.businesses.setNumberWebhook(pn, null);
        return { success: true };
      }
      const url = httpUrl(b.webhook_url, 'webhook_url');
      const verifyToken = text(b.verify_token, 'verify_token');
      await checked(url, verifyToken);
      await deps.businesses.setNumberWebhook(pn, { url, verifyToken });
      return { success: true };
    });

    app.delete('/admin/businesses/:business_id/phone_numbers/:phone_number_id', { onRequest }, async (req) => {
      const { id, pn } = await ownNumber(req);
      try {
        await deps.businesses.removeNumber(id, pn);
      } catch (e) {
        throw new InvalidParameterError((e as Error).message);
      }
      return { success: true };
    });

    app.get('/admin/businesses/:business_id/tokens', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      return { business_id: id, tokens: await deps.businesses.tokens(id) };
    });

    app.post('/admin/businesses/:business_id/tokens', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const body = (req.body ?? {}) as { expires_in?: unknown };
      if (body.expires_in !== undefined && !(Number.isInteger(body.expires_in) && (body.expires_in as number) > 0)) {
        throw new InvalidParameterError('expires_in must be a whole number of seconds');
      }
      return deps.businesses.issueToken(id, body.expires_in ? (body.expires_in as number) * 1000 : undefined);
    });

    app.delete('/admin/businesses/:business_id/tokens/:token_id', { onRequest }, async (req) => {
      const p = req.params as { business_id: string; token_id: string };
      const id = await business(p.business_id, req);
      if (!(await deps.businesses.revokeToken(id, p.token_id))) throw new InvalidParameterError('No such token', 404);
      return { success: true };
    });

    app.get('/admin/businesses/:business_id/stats', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const q = req.query as { from?: string; to?: string };
      const to = q.to ?? new Date().toISOString().slice(0, 10);
      const from = q.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 6 * 86_400_000).toISOString().slice(0, 10);
      if (!DAY.test(from) || !DAY.test(to) || from > to) throw new InvalidParameterError('from and to must be days (YYYY-MM-DD), from <= to');
      return { business_id: id, days: await deps.stats.days(id, from, to) };
    });

    app.get('/admin/businesses/:business_id/billing', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const month = (req.query as { month?: string }).month ?? new Date().toISOString().slice(0, 7);
      if (!MONTH.test(month)) throw new InvalidParameterError('month must be YYYY-MM');
      return deps.stats.billing(id, month);
    });

    const userOf = async (req: FastifyRequest) => {
      const p = req.params as { business_id: string; wa_id: string };
      const id = await business(p.business_id, req);
      if (!/^[1-9]\d{6,14}$/.test(p.wa_id)) throw new InvalidParameterError('wa_id must be the user\'s number, digits only');
      const numbers = await deps.businesses.numbersOf(id);
      const pn = (req.query as { phone_number_id?: string }).phone_number_id ?? numbers[0];
      if (!pn || !numbers.includes(pn)) throw new InvalidParameterError('phone_number_id is not one of this business\'s numbers');
      return { id, pn, waId: p.wa_id };
    };

    app.get('/admin/businesses/:business_id/users/:wa_id', { onRequest }, async (req) => {
      const u = await userOf(req);
      const data = await deps.data.export(u.id, u.pn, u.waId);
      if (!data) throw new InvalidParameterError('Sealpost holds nothing about this user for this business', 404);
      return data;
    });

    app.delete('/admin/businesses/:business_id/users/:wa_id', { onRequest }, async (req) => {
      const u = await userOf(req);
      return { success: true, erased: await deps.data.erase(u.id, u.pn, u.waId) };
    });
  };
}
