import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { DataRequests } from '../runtime/data-requests.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Stats } from '../store/stats.ts';
import { InvalidParameterError, UnknownObjectError } from './errors.ts';
import { checkAdmin } from '../ops/admin-auth.ts';

/** What the admin routes need. */
export interface AdminDeps {
  /** SEALPOST_ADMIN_TOKEN; without one the admin API refuses every request. */
  token?: string;
  businesses: BusinessStore;
  stats: Stats;
  data: DataRequests;
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
