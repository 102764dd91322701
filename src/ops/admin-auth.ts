import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../api/errors.ts';

/** The admin session cookie: a browser cannot send a Bearer header when it navigates to a page. */
export const ADMIN_COOKIE = 'sealpost_admin';

/** The cookie value for a token: an HMAC of it, so the cookie never holds the token itself. */
export function sessionValue(token: string): string {
  return createHmac('sha256', token).update('sealpost admin session v1').digest('base64url');
}

const equal = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

function cookieOf(req: FastifyRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** True when the request carries the admin token (Bearer) or the admin session cookie. */
export function isAdmin(req: FastifyRequest, token: string | undefined): boolean {
  if (!token) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (m && equal(m[1]!, token)) return true;
  const cookie = cookieOf(req, ADMIN_COOKIE);
  return cookie !== undefined && equal(cookie, sessionValue(token));
}

/** Throws the Graph envelope's 190 unless the request is an admin's. */
export function checkAdmin(req: FastifyRequest, token: string | undefined): void {
  if (!token) throw new AuthError('The admin API is disabled: set SEALPOST_ADMIN_TOKEN');
  if (!isAdmin(req, token)) throw new AuthError('Invalid admin token');
}

/** Sets the session cookie (HttpOnly, SameSite=Strict, only under /admin). */
export function setAdminCookie(reply: FastifyReply, token: string, secure: boolean): void {
  reply.header('set-cookie', `${ADMIN_COOKIE}=${sessionValue(token)}; Path=/admin; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}; Max-Age=43200`);
}

/** Whether a browser is asking (it gets the login page instead of a JSON error). */
export const wantsHtml = (req: FastifyRequest) => (req.headers.accept ?? '').includes('text/html');
