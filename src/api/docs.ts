import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { openApiDocument } from './openapi.ts';

/**
 * The page's Content-Security-Policy: Swagger UI's own files only (its page has no inline script), requests
 * ("Try it out") to this origin only; its React UI sets inline styles, hence 'unsafe-inline' for styles.
 */
export const DOCS_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/**
 * `GET /openapi.json`, the OpenAPI 3.1 document of the HTTP API, and `GET /docs`, the same as a page (Swagger
 * UI, served from this process, nothing from elsewhere). Both are public: they describe routes, which keep
 * their own authentication.
 */
export async function docsRoutes(app: FastifyInstance): Promise<void> {
  const document = openApiDocument();
  app.get('/openapi.json', async (_req, reply) => reply.header('cache-control', 'public, max-age=300').send(document));
  await app.register(swagger, { mode: 'static', specification: { document: document as never } });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: DOCS_CSP,
    uiConfig: { deepLinking: true, defaultModelsExpandDepth: 0, tryItOutEnabled: false },
    theme: { title: 'Sealpost API' },
  });
}
