import { randomBytes } from 'node:crypto';

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

/**
 * 100 for an object the token cannot reach. Graph answers the same for unknown ids and for other businesses'
 * ids, so a token cannot probe which ids exist.
 */
export class UnknownObjectError extends GraphError {
  constructor(id: string, method: 'GET' | 'POST') {
    super(100, `Unsupported ${method.toLowerCase()} request. Object with ID '${id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation`,
      `Unsupported ${method.toLowerCase()} request`, 400, 'GraphMethodException');
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

/** A Graph-style trace id that the log line of the same error carries. */
export function newTraceId(): string {
  return randomBytes(16).toString('base64url').slice(0, 23);
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
