import { randomBytes } from 'node:crypto';
import { MediaRefusedError, MediaUploadFailedError, NumberBlockedError, WindowClosedError } from './ports.ts';
import { RateLimitedError } from './rate-limits.ts';
import { isStoreRefusal } from '../redis/health.ts';

/**
 * Every error the API answers with, and the one place they become the Graph error envelope. Clients of the
 * Cloud API branch on `code` and `details`, so each class pins both; `message` is `(#code) title`.
 */

/** An error the API answers with the Graph error envelope and a Cloud API code. */
export class GraphError extends Error {
  constructor(
    readonly code: number,
    readonly title: string,
    readonly details: string,
    readonly httpStatus: number,
    readonly type = 'OAuthException',
  ) {
    super(`(#${code}) ${title}`);
    this.name = 'GraphError';
  }
}

/** 190: missing, malformed, unknown, revoked or expired access token. */
export class AuthError extends GraphError {
  constructor(details = 'Invalid OAuth access token - Cannot parse access token') {
    super(190, 'Invalid OAuth access token', details, 401);
  }
}

/** 100: an invalid parameter (the body, the path or a field). */
export class InvalidParameterError extends GraphError {
  constructor(details: string, httpStatus = 400) {
    super(100, 'Invalid parameter', details, httpStatus);
  }
}

/** 100 with HTTP 413: the body is larger than the API's body limit (nothing of it was read into a message). */
export class BodyTooLargeError extends InvalidParameterError {
  constructor() {
    super('request body too large', 413);
  }
}

/**
 * 100 for an object the token cannot reach. Graph answers the same for unknown ids and for other businesses'
 * ids, so a token cannot probe which ids exist.
 */
/** 4 with HTTP 429: the client sent too many refused requests (bad tokens, oversized bodies); it waits. */
export class ApplicationLimitError extends GraphError {
  constructor(readonly retryAfterS: number) {
    super(4, 'Application request limit reached', `Too many rejected requests from this client; retry in ${retryAfterS} s.`, 429, 'OAuthException');
  }
}

/** 131053: the media could not be uploaded (to the transport, for a message). */
export class MediaUploadFailedGraphError extends GraphError {
  constructor(details: string) {
    super(131053, 'Media upload error', details, 400);
  }
}

export class UnknownObjectError extends GraphError {
  constructor(id: string, method: 'GET' | 'POST' | 'DELETE') {
    const verb = method.toLowerCase();
    super(100, `Unsupported ${verb} request. Object with ID '${id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation`,
      `Unsupported ${verb} request`, 400, 'GraphMethodException');
  }
}

/** 131051: a message type (or form of one, such as media by uploaded id) the Cloud API has but Sealpost does not send yet. */
export class UnsupportedTypeError extends GraphError {
  constructor(type: string) {
    super(131051, 'Unsupported message type', `Message type ${type} is not currently supported.`, 400);
  }
}

/** 130429: the number's throughput was exceeded. */
export class ThroughputError extends GraphError {
  constructor() {
    super(130429, 'Rate limit hit', 'Cloud API message throughput has been reached.', 429);
  }
}

/** 131056: too many messages to one user in a short time. */
export class PairRateLimitError extends GraphError {
  constructor() {
    super(131056, '(Business Account, Consumer Account) pair rate limit hit', 'Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.', 429);
  }
}

/** 131208: too many messages to one group in a short time (the pair limit's burst, per group). */
export class GroupRateLimitError extends GraphError {
  constructor() {
    super(131208, 'Group rate limit hit', 'Too many messages sent to this group in a short period of time.', 429);
  }
}

/** 131048: the number is spam-limited. */
export class SpamLimitError extends GraphError {
  constructor() {
    super(131048, 'Spam rate limit hit', 'Message failed to send because there are restrictions on how many messages can be sent from this phone number.', 400);
  }
}

/** 368: the account is blocked for policy violations. */
export class BlockedError extends GraphError {
  constructor() {
    super(368, 'Temporarily blocked for policies violations', 'The WhatsApp Business Account is restricted from messaging users.', 403);
  }
}

/** 131047: a free-form message outside the 24-hour customer-service window. */
export class ReengagementError extends GraphError {
  constructor() {
    super(131047, 'Re-engagement message', 'More than 24 hours have passed since the recipient last replied to the sender number.', 400);
  }
}

/** 131000: anything unexpected; internals never leak. */
export class InternalError extends GraphError {
  constructor() {
    super(131000, 'Something went wrong', 'Message failed to send because of an unknown error.', 500);
  }
}

/**
 * 131016 with HTTP 503: the store refuses writes for now (Redis out of memory, or failing over); nothing of
 * the request was kept, and the client retries after `Retry-After`.
 */
export class ServiceUnavailableError extends GraphError {
  constructor(readonly retryAfterS = 5) {
    super(131016, 'Service temporarily unavailable', `Sealpost cannot store the request right now; nothing was kept. Retry in ${retryAfterS} s.`, 503);
  }
}

/** 131211: the number has as many groups as it may (10,000). */
export class GroupCreateLimitError extends GraphError {
  constructor(limit: number) {
    super(131211, 'Group creation limit reached', `A business phone number can have at most ${limit} groups; delete one first.`, 400);
  }
}

/** 131059: a paging cursor this API did not give out. */
export class InvalidCursorError extends GraphError {
  constructor() {
    super(131059, 'Invalid cursor', 'The paging cursor is not valid.', 400);
  }
}

/** 131212: a user named is not a participant of the group. */
export class NotGroupParticipantError extends GraphError {
  constructor() {
    super(131212, 'User is not a group participant', 'One or more users are not participants of the group; nothing was changed.', 400);
  }
}

/** 131204: the group would have more participants than allowed (8). */
export class GroupParticipantLimitError extends GraphError {
  constructor(limit: number) {
    super(131204, 'Group participant limit reached', `A group has at most ${limit} participants besides the business.`, 400);
  }
}

/** A Graph-style trace id that the log line of the same error carries. */
export function newTraceId(): string {
  return randomBytes(16).toString('base64url').slice(0, 23);
}

/** Fastify's own client errors (raised before a handler runs), by their `code`. */
const FASTIFY: Record<string, () => GraphError> = {
  FST_ERR_CTP_BODY_TOO_LARGE: () => new BodyTooLargeError(),
  FST_ERR_CTP_INVALID_MEDIA_TYPE: () => new InvalidParameterError('Content-Type must be application/json'),
  FST_ERR_CTP_EMPTY_JSON_BODY: () => new InvalidParameterError('Request body is not valid JSON'),
  FST_ERR_CTP_INVALID_JSON_BODY: () => new InvalidParameterError('Request body is not valid JSON'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: () => new InvalidParameterError('Content-Length does not match the body'),
};

/**
 * The one mapper: API errors as they are, runtime refusals as their Cloud API codes, Fastify's client errors
 * as 100, anything else as 131000 with `unexpected` set (the caller logs those; the client learns nothing).
 * @example graphEnvelope(toGraphError(err).graph, newTraceId())
 */
export function toGraphError(err: unknown): { graph: GraphError; unexpected: boolean } {
  if (err instanceof GraphError) return { graph: err, unexpected: false };
  if (err instanceof WindowClosedError) return { graph: new ReengagementError(), unexpected: false };
  if (err instanceof NumberBlockedError) return { graph: new BlockedError(), unexpected: false };
  if (err instanceof MediaRefusedError) return { graph: new InvalidParameterError(err.message), unexpected: false };
  if (err instanceof MediaUploadFailedError) return { graph: new MediaUploadFailedGraphError(err.message), unexpected: false };
  if (err instanceof RateLimitedError) return { graph: err.limit === 'throughput' ? new ThroughputError() : new PairRateLimitError(), unexpected: false };
  // Unexpected for the operator (logged with its reason; a queued job keeps its content and is retried), but
  // not a failure of the request: the client is told to come back.
  if (isStoreRefusal(err)) return { graph: new ServiceUnavailableError(), unexpected: true };
  const fe = (typeof err === 'object' && err !== null ? err : {}) as { code?: unknown; statusCode?: unknown };
  const known = typeof fe.code === 'string' ? FASTIFY[fe.code] : undefined;
  if (known) return { graph: known(), unexpected: false };
  // JSON.parse's SyntaxError, which Fastify tags with 400, and any other client error it raises: those
  // messages describe the request, never our internals, so they may reach the client.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const details = err instanceof SyntaxError ? 'Request body is not valid JSON' : String((err as Error).message ?? 'Invalid request').slice(0, 200);
    return { graph: new InvalidParameterError(details, fe.statusCode), unexpected: false };
  }
  return { graph: new InternalError(), unexpected: true };
}

/** The Graph error envelope of an error. */
export function graphEnvelope(err: GraphError, fbtraceId: string): Record<string, unknown> {
  return {
    error: {
      message: err.message,
      type: err.type,
      code: err.code,
      error_data: { messaging_product: 'whatsapp', details: err.details },
      fbtrace_id: fbtraceId,
    },
  };
}

/** 131041: the group is unknown (or another business's, or another number's). */
export class UnknownGroupGraphError extends GraphError {
  constructor() {
    super(131041, 'Group not found', 'The group does not exist or does not belong to this phone number.', 400);
  }
}

/** 131020: the group has no participant besides the business: nobody to send to. */
export class SingleMemberGroupError extends GraphError {
  constructor() {
    super(131020, 'Group has no participants', 'The group has no participants besides the business; nothing was sent.', 400);
  }
}
