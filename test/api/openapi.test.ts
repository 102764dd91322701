import { Ajv2020 } from 'ajv/dist/2020.js';
import type { RouteOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, openWindows, startSystem, type TestSystem } from '../helpers/system.ts';

type Json = Record<string, any>;

/**
 * Routes the server has that the document leaves out on purpose, each with its reason. Everything else the
 * server answers must be in the document, and everything in the document must be a route of the server.
 */
const NOT_DOCUMENTED: [RegExp, string][] = [
  [/^HEAD /, 'Fastify answers HEAD for every GET by itself'],
  [/^GET \/admin\/queues\/.+/, "the queue board's own UI files and JSON API (bull-board's, not Sealpost's); the board page itself is documented"],
  [/^GET \/admin\/queues\/$/, 'the board page with a trailing slash (Fastify registers both forms of a prefixed plugin\'s root)'],
  [/^(GET|POST|PUT|PATCH|DELETE) \/admin\/queues\/api\//, "the board's JSON API"],
  [/^GET \/docs\/.+/, "Swagger UI's assets and its own copy of the document (/docs/json, /docs/yaml)"],
  [/^GET \/docs\/$/, 'the page with a trailing slash'],
  [/^GET \/favicon\.ico$/, 'an empty answer for browsers, not part of the API'],
];

/** `METHOD /path/{param}` for each route, its Fastify parameters written as OpenAPI writes them. */
function served(routes: Pick<RouteOptions, 'method' | 'url'>[]): string[] {
  return routes.flatMap((r) => [r.method].flat().map((m) => `${m} ${r.url.replace(/:(\w+)/g, '{$1}')}`));
}

/** The routes a document describes, as `METHOD /path`. */
function documented(doc: Json): string[] {
  return Object.entries(doc.paths as Json).flatMap(([p, ops]) => Object.keys(ops as Json).map((m) => `${m.toUpperCase()} ${p}`));
}

/** What differs between the server's routes and a document: routes it does not describe, and operations the server has not. */
function drift(routes: string[], doc: Json): { undocumented: string[]; unserved: string[] } {
  const described = new Set(documented(doc));
  const have = new Set(routes);
  return {
    undocumented: routes.filter((r) => !described.has(r) && !NOT_DOCUMENTED.some(([re]) => re.test(r))).sort(),
    unserved: [...described].filter((r) => !have.has(r)).sort(),
  };
}

describe('GET /openapi.json: the document of the API the server really has', () => {
  let sys: TestSystem;
  const routes: Pick<RouteOptions, 'method' | 'url'>[] = [];
  let doc: Json;
  let ajv: Ajv2020;

  beforeAll(async () => {
    // Copied when added: Fastify rewrites a prefixed plugin's root route (`/admin/queues` to `/admin/queues/`) afterwards.
    sys = await startSystem({ onRoute: (r) => routes.push({ method: r.method, url: r.url }) });
    const res = await fetch(`${sys.apiUrl}/openapi.json`);
    expect(res.status).toBe(200);
    doc = (await res.json()) as Json;
    ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
    ajv.addSchema(doc, 'openapi');
  }, 60_000);
  afterAll(async () => sys?.close());

  /** The schema of an operation's request body or of one of its answers, following `$ref`s to components. */
  const schemaOf = (method: string, path: string, what: 'request' | number, type = 'application/json') => {
    const op = doc.paths[path]?.[method];
    expect(op, `${method} ${path} in the document`).toBeDefined();
    let part = what === 'request' ? op.requestBody : op.responses[String(what)];
    expect(part, `${method} ${path} ${what}`).toBeDefined();
    if (part.$ref) part = doc.components.responses[part.$ref.split('/').pop()];
    return part.content[type].schema as Json;
  };
  /** Validation errors of `value` against `schema` (a schema of the document, refs resolved in it); [] when valid. */
  const errors = (schema: Json, value: unknown) => {
    const validate = ajv.compile(rebase(schema));
    return validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
  };
  /** A schema of the document made to resolve its `#/components/...` refs in the document added to ajv. */
  const rebase = (schema: Json): Json => JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openapi#/components/'));

  it('is an OpenAPI 3.1 document with the two security schemes and the Graph error envelope', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.components.securitySchemes.businessToken).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.securitySchemes.adminToken).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.schemas.GraphErrorEnvelope.properties.error.required).toEqual(expect.arrayContaining(['message', 'type', 'code', 'error_data', 'fbtrace_id']));
    expect(doc.components.schemas.GraphErrorEnvelope.properties.error.properties.code.enum).toEqual(expect.arrayContaining([100, 190, 131026, 130429, 131056, 131048, 368, 131000]));
    expect(doc.paths['/{version}/{phone_number_id}/messages'].post.security).toEqual([{ businessToken: [] }]);
    expect(doc.paths['/admin/businesses'].post.security).toEqual([{ adminToken: [] }, { adminSession: [] }]);
    expect(doc.paths['/openapi.json'].get.security).toEqual([]);
  });

  it('describes every route the server has, and nothing it has not', () => {
    const have = served(routes);
    // The collection saw the routes of every part: the Business API, media, admin, operator pages, the board.
    for (const r of ['POST /{version}/{phone_number_id}/messages', 'DELETE /{phone_number_id}', 'POST /admin/businesses', 'GET /metrics', 'GET /admin/queues', 'GET /openapi.json']) expect(have).toContain(r);
    expect(drift(have, doc)).toEqual({ undocumented: [], unserved: [] });
    // The comparison catches a route missing from the document and an operation the server does not have.
    expect(drift([...have, 'POST /admin/businesses/{business_id}/reticulate'], doc).undocumented).toEqual(['POST /admin/businesses/{business_id}/reticulate']);
    const { '/metrics': _, ...fewer } = doc.paths;
    expect(drift(have, { paths: { ...fewer, '/v1/ghost': { get: {} } } })).toEqual({ undocumented: ['GET /metrics'], unserved: ['GET /v1/ghost'] });
  });

  it('is public, while every operation it marks as secured refuses a request without credentials with 190', async () => {
    expect((await fetch(`${sys.apiUrl}/openapi.json`)).headers.get('content-type')).toMatch(/^application\/json/);
    let checked = 0;
    for (const [path, ops] of Object.entries(doc.paths as Json)) {
      for (const [method, op] of Object.entries(ops as Json)) {
        const url = path.replace('{version}', 'v23.0').replace(/\{\w+\}/g, '1234567');
        const res = await fetch(`${sys.apiUrl}${url}`, { method: method.toUpperCase(), redirect: 'manual', headers: { accept: 'application/json' } });
        if (op.security.length === 0) {
          // Public pages answer without credentials (POST /admin/login's answer is about the token it was given).
          if (method === 'get') expect(res.status, `${method} ${path}`).toBeLessThan(400);
          await res.arrayBuffer();
          continue;
        }
        checked++;
        expect(res.status, `${method} ${path}`).toBe(401);
        const body = (await res.json()) as Json;
        expect(errors(schemaOf(method, path, 401), body), `${method} ${path}`).toEqual([]);
        expect(body.error.code).toBe(190);
      }
    }
    expect(checked).toBeGreaterThan(25);
  });

  it('validates a real text send and its answer, a 400 and a 401 answer, and an admin create business with its answer', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557700001');
    await openWindows(sys, [wa]);
    const send = { messaging_product: 'whatsapp', recipient_type: 'individual', to: '+1 555 770 0001', type: 'text', text: { body: 'your order has shipped', preview_url: false }, biz_opaque_callback_data: 'order-42' };
    const path = '/{version}/{phone_number_id}/messages';
    expect(errors(schemaOf('post', path, 'request'), send)).toEqual([]);
    const post = (body: unknown, token = sys.business.access_token) => fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const ok = await post(send);
    const accepted = (await ok.json()) as Json;
    expect(ok.status, JSON.stringify(accepted)).toBe(200);
    expect(errors(schemaOf('post', path, 200), accepted)).toEqual([]);
    expect(errors({ $ref: '#/components/schemas/SendAccepted' }, accepted)).toEqual([]);

    // A body the document refuses is refused by the server too, with the envelope the document describes.
    const bad = { ...send, text: { body: 'x'.repeat(4097) } };
    expect(errors(schemaOf('post', path, 'request'), bad)).not.toEqual([]);
    const refused = await post(bad);
    expect(refused.status).toBe(400);
    const envelope = (await refused.json()) as Json;
    expect(errors(schemaOf('post', path, 400), envelope)).toEqual([]);
    const unauthorized = await post(send, 'not-a-token');
    expect(unauthorized.status).toBe(401);
    const e401 = (await unauthorized.json()) as Json;
    expect(errors(schemaOf('post', path, 401), e401)).toEqual([]);

    const create = { name: 'Documented Co', webhook_url: sys.receiver.url, app_secret: 'secret-of-documented', verify_token: 'verify-me', retention: '7d' };
    expect(errors(schemaOf('post', '/admin/businesses', 'request'), create)).toEqual([]);
    const created = await fetch(`${sys.apiUrl}/admin/businesses`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(create),
    });
    const business = (await created.json()) as Json;
    expect(created.status, JSON.stringify(business)).toBe(200);
    expect(errors(schemaOf('post', '/admin/businesses', 200), business)).toEqual([]);

    // The schemas are not vacuous: answers that differ from the Cloud API's are refused.
    expect(errors(schemaOf('post', path, 400), { error: { ...envelope.error, fbtrace_id: undefined } })).not.toEqual([]);
    expect(errors(schemaOf('post', path, 400), { error: { ...envelope.error, code: 42 } })).not.toEqual([]);
    expect(errors(schemaOf('post', path, 400), { ...envelope, extra: true })).not.toEqual([]);
    expect(errors(schemaOf('post', path, 200), { ...accepted, messages: [{ id: 'not-a-wamid' }] })).not.toEqual([]);
    expect(errors(schemaOf('post', '/admin/businesses', 200), { ...business, access_token: undefined })).not.toEqual([]);
    expect(errors(schemaOf('post', '/admin/businesses', 'request'), { ...create, app_secret: 'short' })).not.toEqual([]);
  }, 60_000);

  it('serves the document as a page at /docs under a strict CSP, every file it loads from this server', async () => {
    const page = await fetch(`${sys.apiUrl}/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    const html = await page.text();
    // No inline script (the CSP would block it), and every script and stylesheet is served here.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.filter((a) => a.endsWith('.js'))).toHaveLength(3);
    for (const a of assets) {
      expect(a, a).toMatch(/^\/docs\//);
      const res = await fetch(`${sys.apiUrl}${a}`);
      expect(res.status, a).toBe(200);
      await res.arrayBuffer();
    }
    // The page loads the same document.
    expect(await (await fetch(`${sys.apiUrl}/docs/json`)).json()).toEqual(doc);
  });
});
