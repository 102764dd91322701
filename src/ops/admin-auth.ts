import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../runtime/graph-errors.ts';

/** The admin session cookie: a browser cannot send a Bearer header when it navigates to a page. */
export const ADMIN_COOKIE = 'sealpost_admin';

const equal = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/** How long an admin session lasts; the server checks it, whatever the browser keeps. */
export const ADMIN_SESSION_MS = 12 * 3600_000;

/**
 * The cookie value for a token issued at `issuedAt` (ms): the issue time and an HMAC of it under the token,
 * so the cookie never holds the token, expires on the server after {@link ADMIN_SESSION_MS}, and every
 * session ends when the token changes.
 */
export function sessionValue(token: string, issuedAt: number = Date.now()): string {
  const t = Math.floor(issuedAt / 1000);
  return `${t}.${createHmac('sha256', token).update(`sealpost admin session v2|${t}`).digest('base64url')}`;
}

/** Whether a cookie value is a session of `token` still running at `now`. */
export function sessionValid(value: string, token: string, now: number = Date.now()): boolean {
  const m = /^(\d{1,12})\.[\w-]{43}$/.exec(value);
  if (!m) return false;
  const issuedAt = Number(m[1]) * 1000;
  // A minute of clock skew between API processes; a session from the future is forged or misconfigured.
  if (issuedAt > now + 60_000 || now - issuedAt >= ADMIN_SESSION_MS) return false;
  return equal(value, sessionValue(token, issuedAt));
}

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
  return cookie !== undefined && sessionValid(cookie, token);
}

/** Whether the request presents admin credentials at all (a Bearer header or the session cookie), right or wrong. */
export function presentsCredentials(req: FastifyRequest): boolean {
  return req.headers.authorization !== undefined || cookieOf(req, ADMIN_COOKIE) !== undefined;
}

/** Throws the Graph envelope's 190 unless the request is an admin's. */
export function checkAdmin(req: FastifyRequest, token: string | undefined): void {
  if (!token) throw new AuthError('The admin API is disabled: set SEALPOST_ADMIN_TOKEN');
  if (!isAdmin(req, token)) throw new AuthError('Invalid admin token');
}

/** Sets the session cookie (HttpOnly, SameSite=Strict, only under /admin). */
export function setAdminCookie(reply: FastifyReply, token: string, secure: boolean): void {
  reply.header('set-cookie', `${ADMIN_COOKIE}=${sessionValue(token)}; Path=/admin; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}; Max-Age=${ADMIN_SESSION_MS / 1000}`);
}

/** Whether a browser is asking (it gets the login page instead of a JSON error). */
export const wantsHtml = (req: FastifyRequest) => (req.headers.accept ?? '').includes('text/html');
