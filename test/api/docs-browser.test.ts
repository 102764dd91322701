import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../helpers/browser.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';

/** /docs in a real browser: Swagger UI renders the document under the page's Content-Security-Policy. */
describe('/docs in headless Chromium', () => {
  let sys: TestSystem;
  let browser: Browser;
  beforeAll(async () => {
    sys = await startSystem({ workers: false });
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await sys?.close();
  });

  it('shows every operation of the document, with nothing refused by the CSP and nothing loaded from elsewhere', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const problems: string[] = [];
    const elsewhere: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('request', (r) => { if (!r.url().startsWith(sys.apiUrl) && !r.url().startsWith('data:')) elsewhere.push(r.url()); });
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
    const res = await page.goto(`${sys.apiUrl}/docs`);
    expect(res!.headers()['content-security-policy']).toMatch(/default-src 'none'; script-src 'self'/);
    await page.locator('.swagger-ui .info .title').filter({ hasText: 'Sealpost' }).waitFor({ timeout: 30_000 });
    const documented = await (await fetch(`${sys.apiUrl}/openapi.json`)).json() as { paths: Record<string, Record<string, unknown>> };
    const count = Object.values(documented.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    await page.locator('.opblock').nth(count - 1).waitFor({ timeout: 30_000 });
    expect(await page.locator('.opblock').count()).toBe(count);
    expect(await page.locator('.opblock-summary-path').allTextContents()).toEqual(expect.arrayContaining(['/{version}/{phone_number_id}/messages', '/admin/businesses']));
    expect(problems).toEqual([]);
    expect(elsewhere).toEqual([]);
    await page.close();
  }, 90_000);
});
