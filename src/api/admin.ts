import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { DataRequests } from '../runtime/data-requests.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Stats } from '../store/stats.ts';
import { InvalidParameterError, UnknownObjectError } from '../runtime/graph-errors.ts';
import { checkAdmin } from '../ops/admin-auth.ts';
import { Provisioning, ProvisioningError } from '../runtime/provisioning.ts';
import { parseOr100 } from '../runtime/message-schemas.ts';
import { AddNumberBody, AppSecretBody, BillingQuery, CreateBusinessBody, IssueTokenBody, NumberWebhookBody, PatchBusinessBody, StatsQuery, UserQuery, WaIdParam } from './schemas/admin.ts';

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
  /** The businesses' groups: deleted with their number or business. */
  groups?: { forgetNumber(businessId: string, phoneNumberId: string): Promise<number> };
}

/**
 * A provisioning refusal in the Graph envelope: code 100 with the service's wording as `details`; an unknown
 * business is answered as Graph answers an unknown object, a number not of this business with a 404.
 */
function graphError(e: unknown, method: string): unknown {
  if (!(e instanceof ProvisioningError)) return e;
  if (e.code === 'unknown' && e.field === 'business_id') return new UnknownObjectError((e.value ?? '').slice(0, 40), method === 'POST' || method === 'DELETE' ? method : 'GET');
  if (e.code === 'unknown' && e.field === 'phone_number_id') return new InvalidParameterError('phone_number_id is not one of this business\'s numbers', 404);
  return new InvalidParameterError(e.message);
}


/**
 * Admin routes (behind the admin token): the Business Manager (businesses, their numbers, webhooks, app secrets
 * and data keys, by the provisioning service's rules), statistics and billing per business, and data requests
 * (export, erase) for one user of one business.
 */
export function adminRoutes(deps: AdminDeps) {
  const provisioning = new Provisioning({
    businesses: deps.businesses, denyPrivate: deps.denyPrivate ?? false,
    ...(deps.publisher ? { publisher: deps.publisher } : {}), ...(deps.dataKeys ? { dataKeys: deps.dataKeys } : {}), ...(deps.verify ? { verify: deps.verify } : {}),
    ...(deps.groups ? { groups: deps.groups } : {}),
  });
  return (app: FastifyInstance): void => {
    /** Runs a provisioning operation, its refusals answered in the Graph envelope. */
    const provisioned = async <T>(req: FastifyRequest, op: (p: Provisioning) => Promise<T>): Promise<T> => {
      try {
        return await op(provisioning);
      } catch (e) {
        throw graphError(e, req.method);
      }
    };
    const business = async (id: string, req: FastifyRequest) => {
      await provisioned(req, (p) => p.business(id));
      return id;
    };
    const onRequest = async (req: FastifyRequest) => checkAdmin(req, deps.token);
    const params = (req: FastifyRequest) => req.params as { business_id: string; phone_number_id: string };
    /** The request body parsed with its schema (src/api/schemas/admin.ts); no body is an empty object. */
    const body = <S extends z.ZodType>(schema: S, req: FastifyRequest): z.output<S> => parseOr100(schema, req.body ?? {});

    // The Business Manager: businesses, their numbers, webhooks and app secrets. Secrets are accepted, never shown.
    app.get('/admin/businesses', { onRequest }, async () => ({ businesses: await provisioning.list() }));

    app.post('/admin/businesses', { onRequest }, async (req) => {
      const b = body(CreateBusinessBody, req);
      return provisioned(req, (p) => p.create({ name: b.name, webhookUrl: b.webhook_url, appSecret: b.app_secret, verifyToken: b.verify_token, retention: b.retention }));
    });

    app.get('/admin/businesses/:business_id', { onRequest }, async (req) => {
      const id = params(req).business_id;
      return provisioned(req, async (p) => ({ ...(await p.business(id)), phone_numbers: await p.numbers(id) }));
    });

    app.patch('/admin/businesses/:business_id', { onRequest }, async (req) => {
      const b = body(PatchBusinessBody, req);
      await provisioned(req, (p) => p.update(params(req).business_id, { name: b.name, retention: b.retention, webhookUrl: b.webhook_url, verifyToken: b.verify_token }));
      return { success: true };
    });

    app.delete('/admin/businesses/:business_id', { onRequest }, async (req) => ({ success: await provisioned(req, (p) => p.delete(params(req).business_id)) }));

    app.post('/admin/businesses/:business_id/app_secret', { onRequest }, async (req) => {
      const { appSecret, generated } = await provisioned(req, (p) => p.rotateAppSecret(params(req).business_id, body(AppSecretBody, req).app_secret));
      // Shown once when generated here; a secret the caller chose is not echoed.
      return generated ? { success: true, app_secret: appSecret } : { success: true };
    });

    // A new data key version; it starts sealing once every process has read it (`active_at`, ms since the epoch).
    if (deps.dataKeys) {
      app.post('/admin/businesses/:business_id/data-key/rotate', { onRequest }, async (req) => {
        const { version, activeAt } = await provisioned(req, (p) => p.rotateDataKey(params(req).business_id));
        return { success: true, version, active_at: activeAt };
      });
    }

    app.get('/admin/businesses/:business_id/phone_numbers', { onRequest }, async (req) => ({ data: await provisioned(req, (p) => p.numbers(params(req).business_id)) }));

    app.post('/admin/businesses/:business_id/phone_numbers', { onRequest }, async (req) => provisioned(req, (p) => p.addNumber(params(req).business_id, { verifiedName: body(AddNumberBody, req).verified_name })));

    app.patch('/admin/businesses/:business_id/phone_numbers/:phone_number_id', { onRequest }, async (req) => {
      const { business_id: id, phone_number_id: pn } = params(req);
      const b = body(NumberWebhookBody, req);
      // `webhook_url: null` gives the number its business's webhook again.
      await provisioned(req, (p) => p.setNumberWebhook(id, pn, b.webhook_url === null ? null : { url: b.webhook_url, verifyToken: b.verify_token }));
      return { success: true };
    });

    app.delete('/admin/businesses/:business_id/phone_numbers/:phone_number_id', { onRequest }, async (req) => {
      await provisioned(req, (p) => p.removeNumber(params(req).business_id, params(req).phone_number_id));
      return { success: true };
    });

    app.get('/admin/businesses/:business_id/tokens', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      return { business_id: id, tokens: await deps.businesses.tokens(id) };
    });

    app.post('/admin/businesses/:business_id/tokens', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const { expires_in: expiresIn } = body(IssueTokenBody, req);
      return deps.businesses.issueToken(id, expiresIn ? expiresIn * 1000 : undefined);
    });

    app.delete('/admin/businesses/:business_id/tokens/:token_id', { onRequest }, async (req) => {
      const p = req.params as { business_id: string; token_id: string };
      const id = await business(p.business_id, req);
      if (!(await deps.businesses.revokeToken(id, p.token_id))) throw new InvalidParameterError('No such token', 404);
      return { success: true };
    });

    app.get('/admin/businesses/:business_id/stats', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const q = parseOr100(StatsQuery, req.query);
      const to = q.to ?? new Date().toISOString().slice(0, 10);
      const from = q.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 6 * 86_400_000).toISOString().slice(0, 10);
      if (from > to) throw new InvalidParameterError('from and to must be days (YYYY-MM-DD), from <= to');
      return { business_id: id, days: await deps.stats.days(id, from, to) };
    });

    app.get('/admin/businesses/:business_id/billing', { onRequest }, async (req) => {
      const id = await business((req.params as { business_id: string }).business_id, req);
      const month = parseOr100(BillingQuery, req.query).month ?? new Date().toISOString().slice(0, 7);
      return deps.stats.billing(id, month);
    });

    const userOf = async (req: FastifyRequest) => {
      const p = req.params as { business_id: string; wa_id: string };
      const id = await business(p.business_id, req);
      parseOr100(WaIdParam, p.wa_id);
      const numbers = await deps.businesses.numbersOf(id);
      const pn = parseOr100(UserQuery, req.query).phone_number_id ?? numbers[0];
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
