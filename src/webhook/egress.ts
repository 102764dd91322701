import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import type { FetchLike } from './delivery.ts';

/**
 * How much of another party's answer Sealpost reads (webhook receivers, the subscription check): enough for
 * any sensible answer, and a receiver streaming gigabytes cannot exhaust a worker.
 */
export const MAX_ANSWER_BYTES = 64 * 1024;

/** An answer's body read up to a bound: what was read, and whether more was left unread. */
export interface BoundedBody {
  text: string;
  truncated: boolean;
}

/**
 * Reads at most `limit` bytes of a response body, then cancels the rest (the connection is closed rather
 * than drained). Rejects like the body would (a timeout's abort, a reset).
 * @example const { text, truncated } = await readAtMost(res, MAX_ANSWER_BYTES);
 */
export async function readAtMost(res: Response, limit = MAX_ANSWER_BYTES): Promise<BoundedBody> {
  if (!res.body) return { text: '', truncated: false };
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { text: Buffer.concat(chunks).toString('utf8'), truncated: false };
    const room = limit - size;
    chunks.push(value.byteLength > room ? value.subarray(0, room) : value);
    size += Math.min(value.byteLength, room);
    if (value.byteLength >= room) {
      // Whatever the sender still has stays unread: cancelling closes the stream and its connection.
      await reader.cancel().catch(() => undefined);
      return { text: Buffer.concat(chunks).toString('utf8'), truncated: true };
    }
  }
}

/** Addresses a webhook must not reach when private targets are refused: loopback, private, link-local and the like. */
const PRIVATE = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) PRIVATE.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8], ['64:ff9b:1::', 48],
] as const) PRIVATE.addSubnet(net, bits, 'ipv6');

/** Whether an IP address is loopback, private, link-local, unspecified, multicast or otherwise not public. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return PRIVATE.check(address, 'ipv4');
  if (family !== 6) return true;
  const lower = address.toLowerCase();
  // IPv4 written as IPv6 (::ffff:10.0.0.1, ::ffff:a00:1, NAT64 64:ff9b::a00:1): judged as the IPv4 address.
  const mapped = /^(?:::ffff:|64:ff9b::)(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/.exec(lower);
  if (mapped) {
    const v4 = mapped[1] ?? [parseInt(mapped[2]!, 16) >> 8, parseInt(mapped[2]!, 16) & 255, parseInt(mapped[3]!, 16) >> 8, parseInt(mapped[3]!, 16) & 255].join('.');
    return PRIVATE.check(v4, 'ipv4');
  }
  return PRIVATE.check(lower, 'ipv6');
}

/** Raised when a webhook target resolves to an address private targets are refused for. */
export class PrivateTargetError extends Error {
  readonly code = 'EPRIVATETARGET';
  constructor(host: string, address: string) {
    super(`${host} resolves to ${address}, a loopback, private or link-local address (SEALPOST_WEBHOOK_DENY_PRIVATE=1)`);
    this.name = 'PrivateTargetError';
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `dns.lookup` for sockets that refuses private addresses: the check is made on the address the socket is
 * about to connect to, so a name that resolved to a public address when it was configured and to a private
 * one now (DNS rebinding) is refused too.
 */
function guardedLookup(hostname: string, options: object, callback: LookupCallback): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '');
    const list = addresses as LookupAddress[];
    const bad = list.find((a) => isPrivateAddress(a.address));
    if (bad || !list.length) return callback(new PrivateTargetError(hostname, bad?.address ?? 'nothing'), '');
    if ((options as { all?: boolean }).all) return callback(null, list);
    callback(null, list[0]!.address, list[0]!.family);
  });
}

/**
 * Why a webhook URL may not be used, or null when it may: with `denyPrivate`, a URL whose host is (or resolves
 * to) a loopback, private or link-local address is refused, naming the address.
 */
export async function webhookUrlProblem(url: string, denyPrivate: boolean): Promise<string | null> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `not a URL: ${url.slice(0, 80)}`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `not an http(s) URL: ${url.slice(0, 80)}`;
  if (!denyPrivate) return null;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return isPrivateAddress(host) ? `${u.origin} is a loopback, private or link-local address (SEALPOST_WEBHOOK_DENY_PRIVATE=1)` : null;
  try {
    const addresses = await new Promise<LookupAddress[]>((resolve, reject) => dnsLookup(host, { all: true }, (e, a) => (e ? reject(e) : resolve(a))));
    const bad = addresses.find((a) => isPrivateAddress(a.address));
    return bad ? new PrivateTargetError(host, bad.address).message : null;
  } catch (e) {
    return `${host} does not resolve: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/**
 * The `fetch` for requests to businesses' endpoints: Node's own, or, with `denyPrivate`, one whose sockets
 * connect only to public addresses (checked on every connection, after DNS resolution). Its keep-alive pool is
 * shared by every call.
 */
export function egressFetch(denyPrivate: boolean): FetchLike {
  if (!denyPrivate) return (url, init) => fetch(url, init);
  const agent = new Agent({ connect: { lookup: guardedLookup as never } });
  return (url, init) => {
    // A literal IP address never goes through the lookup: it is checked here.
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) && isPrivateAddress(host)) return Promise.reject(Object.assign(new TypeError('fetch failed'), { cause: new PrivateTargetError(host, host) }));
    return undiciFetch(url, { ...(init as object), dispatcher: agent } as never) as unknown as Promise<Response>;
  };
}
