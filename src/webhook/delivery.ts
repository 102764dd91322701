import { asciiJson, signBody } from './signature.ts';
import { buildEnvelope, type ChangeValue } from './envelope.ts';
import { readAtMost } from './egress.ts';

/** Where a business's webhooks go, with the secret to sign them. */
export interface WebhookTarget {
  url: string;
  appSecret: string;
  wabaId: string;
  displayPhoneNumber: string;
}

/** Finds the target of a business number (the business store, injected). */
export type WebhookTargetResolver = (businessId: string, phoneNumberId: string) => Promise<WebhookTarget | null>;

/** A delivery attempt that did not get HTTP 200; `permanent` when retrying cannot help. */
export class WebhookRejectedError extends Error {
  constructor(message: string, readonly permanent = false) {
    super(message);
    this.name = 'WebhookRejectedError';
  }
}

/** The `fetch` a delivery uses; injectable so tests and proxies can stand in. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/**
 * One delivery attempt: build the envelope, serialize it once as ASCII JSON, sign those bytes, POST them.
 * Resolves only on HTTP 200; throws {@link WebhookRejectedError} otherwise (redirects are not followed, so a
 * 3xx fails too).
 */
export async function deliverWebhook(
  data: { business_id: string; phone_number_id: string; values: ChangeValue[] },
  resolve: WebhookTargetResolver,
  opts: { timeoutMs: number; fetchImpl?: FetchLike },
): Promise<void> {
  const target = await resolve(data.business_id, data.phone_number_id);
  if (!target) throw new WebhookRejectedError('no webhook target for this business number', true);
  // Serialized once: the signed string is the exact string sent.
  const body = asciiJson(buildEnvelope({ wabaId: target.wabaId, displayPhoneNumber: target.displayPhoneNumber, phoneNumberId: data.phone_number_id }, data.values));
  let res: Response;
  try {
    res = await (opts.fetchImpl ?? fetch)(target.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signBody(target.appSecret, body) },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (e) {
    const cause = (e as Error & { cause?: Error }).cause;
    throw new WebhookRejectedError(`webhook POST failed: ${cause?.message ?? (e as Error).message}`);
  }
  // Read the answer so a keep-alive connection can be reused, but at most 64 KiB of it: a receiver streaming
  // without end is cut off (its connection closed) instead of filling the worker's memory. The timeout bounds
  // this read too.
  await readAtMost(res).catch(() => undefined);
  if (res.status !== 200) throw new WebhookRejectedError(`webhook answered HTTP ${res.status}`);
}
