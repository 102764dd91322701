import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../helpers/browser.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { openWindows, sendText, startSystem, type TestSystem } from '../helpers/system.ts';

/**
 * The operator's pages in a real browser: headless Chromium signs in through /admin/login, opens the
 * inspector of a real conversation and the queue board. The screenshot goes to a temporary folder, or to
 * SEALPOST_SCREENSHOT (`SEALPOST_SCREENSHOT=docs/inspector.png npx vitest run test/ops/inspector-browser.test.ts`
 * refreshes the one in docs/).
 */
describe('operator pages in headless Chromium', () => {
  let sys: TestSystem;
  let browser: Browser;
  beforeAll(async () => {
    sys = await startSystem();
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await sys?.close();
  });

  it('the inspector shows the current state of a real conversation, highlighted in its statechart, and its trace', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557400001');
    await openWindows(sys, [wa]);
    const first = await sendText(sys, wa, 'your order has shipped');
    const second = await sendText(sys, wa, 'it arrives tomorrow');
    await waitFor(() => [first, second].every((id) => sys.receiver.statuses().some((s) => s.id === id && s.status === 'delivered')), 'delivered');
    const conv = conversationOfWamid(second)!;

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
    await page.goto(`${sys.apiUrl}/admin/conversations/${conv}`);
    // Not signed in: the login page, which sends the browser back to the inspector.
    expect(new URL(page.url()).pathname).toBe('/admin/login');
    await page.fill('#token', sys.adminToken);
    await Promise.all([page.waitForURL(`**/admin/conversations/${conv}`), page.click('button[type=submit]')]);

    expect(await page.textContent('#current-state')).toBe('established');
    const highlighted = await page.$$eval('svg.statechart g.state.active', (gs) => gs.map((g) => g.getAttribute('data-state')));
    expect(highlighted).toEqual(['conversation.established']);
    // The highlight is visible: the active state's box is drawn differently from the others.
    const fills = await page.$$eval('svg.statechart g.state:not(.root) > rect:first-of-type', (rs) => rs.map((r) => (globalThis as unknown as { getComputedStyle(e: unknown): { fill: string } }).getComputedStyle(r).fill));
    expect(new Set(fills).size).toBeGreaterThan(1);
    const steps = await page.$$eval('#timeline tr.step', (rows) => rows.map((r) => r.querySelector('td:nth-child(3) b')?.textContent));
    expect(steps).toEqual(expect.arrayContaining(['MESSAGE_RECEIVED', 'SEND', 'ENCRYPTED', 'TRANSPORT_ACCEPTED', 'DELIVERED']));
    const delivered = await page.$$eval('#messages tr[data-wamid]', (rows) => rows.map((r) => [r.getAttribute('data-wamid'), r.children[3]?.textContent]));
    expect(delivered).toEqual(expect.arrayContaining([[first, 'delivered'], [second, 'delivered']]));
    expect(await page.content()).not.toContain('your order has shipped');
    expect(errors).toEqual([]);

    const shot = process.env.SEALPOST_SCREENSHOT ?? join(mkdtempSync(join(tmpdir(), 'sealpost-inspector-')), 'inspector.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    await page.close();
  }, 90_000);

  it('the queue board loads under its login and its Content-Security-Policy, and lists every Sealpost queue', async () => {
    const page = await browser.newPage();
    const csp: string[] = [];
    page.on('response', (r) => { if (r.url().includes('/admin/queues') && r.headers()['content-security-policy']) csp.push(r.headers()['content-security-policy']!); });
    await page.goto(`${sys.apiUrl}/admin/queues`);
    expect(new URL(page.url()).pathname).toBe('/admin/login');
    await page.fill('#token', sys.adminToken);
    await Promise.all([page.waitForURL('**/admin/queues**'), page.click('button[type=submit]')]);
    for (const name of Object.values(sys.ctx.queues).map((q) => q.name)) {
      await page.getByText(name, { exact: false }).first().waitFor({ timeout: 30_000 });
    }
    expect(csp.length).toBeGreaterThan(0);
    expect(csp[0]).toMatch(/default-src 'none'; script-src 'self'/);
    await page.close();
  }, 90_000);
});
