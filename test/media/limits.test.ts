import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, parseByteSize } from '../../src/config.ts';
import { contentDisposition } from '../../src/media/disposition.ts';
import { checkInboundMedia, storedMimeType } from '../../src/media/limits.ts';
import { AttachmentTooLargeError, TransportClient } from '../../src/runtime/transport-client.ts';

describe('checkInboundMedia: the Cloud API types and sizes for files users send', () => {
  it('takes a kind\'s own types up to its size', () => {
    expect(checkInboundMedia('image', 'image/jpeg', 5 << 20)).toBeNull();
    expect(checkInboundMedia('image', 'Image/PNG; x=y')).toBeNull();
    expect(checkInboundMedia('document', 'application/pdf', 100 << 20)).toBeNull();
    expect(checkInboundMedia('audio', 'audio/ogg; codecs=opus', 1000)).toBeNull();
  });

  it('refuses other types with 131051 and oversized or empty files with 131052', () => {
    expect(checkInboundMedia('document', 'text/html', 10)).toMatchObject({ code: 131051, details: expect.stringMatching(/document files of type "text\/html" are not supported/) });
    expect(checkInboundMedia('image', 'application/pdf', 10)?.code).toBe(131051);
    expect(checkInboundMedia('sticker', 'image/png', 10)?.code).toBe(131051);
    expect(checkInboundMedia('text', 'text/plain', 10)).toMatchObject({ code: 131051, details: 'media of kind "text" are not supported' });
    expect(checkInboundMedia('__proto__', 'image/png', 10)?.code).toBe(131051);
    expect(checkInboundMedia('image', 'image/png', (5 << 20) + 1)).toEqual({ code: 131052, details: 'image files are at most 5242880 bytes; this one has 5242881' });
    expect(checkInboundMedia('sticker', 'image/webp', (500 << 10) + 1)?.code).toBe(131052);
    expect(checkInboundMedia('image', 'image/png', 0)?.code).toBe(131052);
    expect(checkInboundMedia('image', 'image/png', -1)?.code).toBe(131052);
  });

  it('details never carry more than a bounded, printable piece of what the sender wrote', () => {
    const r = checkInboundMedia('document', `text/${'x'.repeat(500)}\u0000\n`, 10)!;
    expect(r.details).toContain(`"text/${'x'.repeat(75)}"`);
    expect(r.details).not.toContain('x'.repeat(76));
    expect(r.details).not.toMatch(/[\u0000\n]/);
  });

  it('stores the base type, plus a plain codecs parameter', () => {
    expect(storedMimeType(' IMAGE/JPEG ')).toBe('image/jpeg');
    expect(storedMimeType('audio/ogg; codecs=opus')).toBe('audio/ogg; codecs=opus');
    expect(storedMimeType('image/png; codecs="a\r\nb"')).toBe('image/png');
  });
});

describe('SEALPOST_MEDIA_QUOTA', () => {
  it('reads byte sizes with binary multiples', () => {
    expect(parseByteSize('1048576')).toBe(1 << 20);
    expect(parseByteSize('500m')).toBe(500 << 20);
    expect(parseByteSize('2g')).toBe(2 * 2 ** 30);
    expect(parseByteSize('64KiB')).toBe(64 << 10);
    expect(parseByteSize('1.5k')).toBe(1536);
    expect(() => parseByteSize('lots')).toThrow(/invalid size/);
    expect(() => parseByteSize('0')).toThrow(/positive/);
  });

  it('defaults to 1 GiB and names itself when invalid', () => {
    expect(loadConfig({}).mediaQuotaBytes).toBe(2 ** 30);
    expect(loadConfig({ SEALPOST_MEDIA_QUOTA: '500m' }).mediaQuotaBytes).toBe(500 << 20);
    expect(() => loadConfig({ SEALPOST_MEDIA_QUOTA: '5 apples' })).toThrow(/mediaQuotaBytes: invalid size/);
  });
});

describe('contentDisposition', () => {
  it('is a bare attachment without a usable name', () => {
    expect(contentDisposition()).toBe('attachment');
    expect(contentDisposition('')).toBe('attachment');
    expect(contentDisposition('../..')).toBe('attachment');
    expect(contentDisposition('dir/\r\n')).toBe('attachment');
  });

  it('names the file by its last segment, with an ASCII fallback and the exact name in filename*', () => {
    expect(contentDisposition('report.pdf')).toBe(`attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`);
    expect(contentDisposition('C:\\Users\\me\\a"b\'(1).pdf')).toBe(`attachment; filename="ab'(1).pdf"; filename*=UTF-8''ab%27%281%29.pdf`);
    expect(contentDisposition('日本\u202e.txt')).toBe(`attachment; filename="__.txt"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt`);
    expect(contentDisposition('100%.txt')).toBe(`attachment; filename="100_.txt"; filename*=UTF-8''100%25.txt`);
    expect(contentDisposition('a\ud800b.txt')).toBe(`attachment; filename="ab.txt"; filename*=UTF-8''ab.txt`);
    expect(contentDisposition('x'.repeat(1000)).length).toBeLessThan(500);
  });
});

describe('TransportClient.downloadAttachment: bounded', () => {
  let server: Server | undefined;
  afterEach(async () => {
    const s = server;
    server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  });
  /** A transport whose blob is `total` bytes, sent in 16 KiB chunks, with or without a Content-Length. */
  const serve = async (total: number, withLength: boolean) => {
    const sent = { bytes: 0, closedEarly: false };
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(withLength ? { 'content-length': String(total) } : {}) });
      res.on('close', () => (sent.closedEarly = !res.writableFinished));
      const chunk = Buffer.alloc(16 << 10, 7);
      const pump = (): void => {
        while (sent.bytes < total) {
          sent.bytes += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sent };
  };

  it('reads a body within the bound', async () => {
    const t = await serve(64 << 10, false);
    const client = new TransportClient(t.url);
    expect((await client.downloadAttachment('p', 64 << 10))!.length).toBe(64 << 10);
    client.close();
  });

  it('stops reading past the bound and cancels the body, with or without a stated length', async () => {
    for (const withLength of [false, true]) {
      const t = await serve(64 << 20, withLength);
      const client = new TransportClient(t.url);
      await expect(client.downloadAttachment('p', 256 << 10)).rejects.toBeInstanceOf(AttachmentTooLargeError);
      await new Promise((r) => setTimeout(r, 200));
      expect(t.sent.closedEarly).toBe(true);
      expect(t.sent.bytes).toBeLessThan(32 << 20);
      client.close();
      server!.closeAllConnections();
      await new Promise((r) => server!.close(r));
      server = undefined;
    }
  });
});
