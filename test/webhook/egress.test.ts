import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { deliverWebhook } from '../../src/webhook/delivery.ts';
import { egressFetch, isPrivateAddress, MAX_ANSWER_BYTES, webhookUrlProblem } from '../../src/webhook/egress.ts';
import { verifySubscription } from '../../src/webhook/subscription.ts';
import { waitFor } from '../helpers/devices.ts';

/**
 * A receiver that answers 200 and then streams up to 256 MiB (bounded, as every load here is), counting what
 * the socket took before the client hung up.
 */
async function streamingReceiver() {
  const state = { written: 0, closed: false, finished: false };
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const server: Server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.on('close', () => (state.closed = true));
    const pump = () => {
      while (state.written < 256 * 1024 * 1024 && !state.closed) {
        state.written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      state.finished = !state.closed;
      res.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
  return { url, state, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe('answers of other parties are read to 64 KiB at most', () => {
  const stop: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stop.splice(0)) await s();
  });

  it('a webhook delivery reads 64 KiB of an endless answer, then hangs up', async () => {
    const r = await streamingReceiver();
    stop.push(r.close);
    const target = { url: r.url, appSecret: 's3cret-s3cret', wabaId: '1', displayPhoneNumber: '15550001111' };
    await deliverWebhook({ business_id: 'b', phone_number_id: 'p', values: [] }, async () => target, { timeoutMs: 30_000 });
    await waitFor(() => r.state.closed, 'the receiver to see the client hang up');
    // What the socket took is the 64 KiB read plus what the kernel's buffers held, far from the 256 MiB on offer.
    expect(r.state.finished).toBe(false);
    expect(r.state.written).toBeLessThan(32 * 1024 * 1024);
    expect(MAX_ANSWER_BYTES).toBe(64 * 1024);
  });

  it('the subscription check does the same, and fails the endpoint that will not stop', async () => {
    const r = await streamingReceiver();
    stop.push(r.close);
    const check = await verifySubscription(r.url, 'tok', { timeoutMs: 30_000 });
    expect(check).toMatchObject({ ok: false, reason: expect.stringContaining('without echoing hub.challenge') });
    await waitFor(() => r.state.closed, 'the endpoint to see the client hang up');
    expect(r.state.finished).toBe(false);
    expect(r.state.written).toBeLessThan(32 * 1024 * 1024);
  });
});

describe('SEALPOST_WEBHOOK_DENY_PRIVATE', () => {
  it('knows loopback, private, link-local and mapped addresses from public ones', () => {
    for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fd00::1', 'fe80::1', '::ffff:10.0.0.1', '::ffff:a00:1', '::ffff:127.0.0.1', 'not-an-ip']) {
      expect(isPrivateAddress(a), a).toBe(true);
    }
    for (const a of ['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect(isPrivateAddress(a), a).toBe(false);
  });

  it('refuses private targets after DNS resolution, naming the address; allows them when off', async () => {
    expect(await webhookUrlProblem('http://127.0.0.1:8080/hook', true)).toMatch(/loopback, private or link-local/);
    expect(await webhookUrlProblem('http://[::ffff:169.254.169.254]/latest', true)).toMatch(/loopback, private or link-local/);
    // A name is judged by what it resolves to.
    expect(await webhookUrlProblem('http://localhost:9/hook', true)).toMatch(/^localhost resolves to (127\.0\.0\.1|::1), a loopback/);
    expect(await webhookUrlProblem('http://93.184.216.34/hook', true)).toBeNull();
    expect(await webhookUrlProblem('http://localhost:9/hook', false)).toBeNull();
    expect(await webhookUrlProblem('ftp://example.com/', false)).toMatch(/not an http\(s\) URL/);
  });

  it('checks every connection, not just the configuration: a delivery to a private address fails before connecting', async () => {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const guarded = egressFetch(true);
      for (const host of ['127.0.0.1', 'localhost']) {
        const target = { url: `http://${host}:${port}/hook`, appSecret: 's3cret-s3cret', wabaId: '1', displayPhoneNumber: '15550001111' };
        await expect(deliverWebhook({ business_id: 'b', phone_number_id: 'p', values: [] }, async () => target, { timeoutMs: 5000, fetchImpl: guarded }))
          .rejects.toThrow(/loopback, private or link-local/);
      }
      expect(seen).toEqual([]);
      // The same endpoint is reached when the setting is off.
      const target = { url: `http://127.0.0.1:${port}/hook`, appSecret: 's3cret-s3cret', wabaId: '1', displayPhoneNumber: '15550001111' };
      await deliverWebhook({ business_id: 'b', phone_number_id: 'p', values: [] }, async () => target, { timeoutMs: 5000, fetchImpl: egressFetch(false) });
      expect(seen).toEqual(['/hook']);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
