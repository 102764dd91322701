import { InvalidParameterError } from './graph-errors.ts';
import { validateMessagesBody, type SendBody } from './message-body.ts';
import type { Accepted, OutboundPort } from './ports.ts';

/** What a `POST …/messages` request did: marked a message read, or accepted a send (with the `to` it gave). */
export type MessagesOutcome = { kind: 'read' } | { kind: 'sent'; to: string; accepted: Accepted };

/**
 * The one path of a messages request, whether it came over HTTP or by direct enqueue: the body is validated
 * before the runtime sees anything (a bad request leaves nothing behind), then a message is marked read or a
 * send accepted. Refusals throw the Graph errors both front ends answer with; each builds its own answer.
 * @example const outcome = await handleMessagesRequest(outbound, pn, req.body, { onSend: (s) => note(s.waId) });
 */
export async function handleMessagesRequest(
  outbound: OutboundPort,
  pn: { business_id: string; phone_number_id: string },
  body: unknown,
  opts: { idempotencyKey?: string; onSend?: (send: SendBody) => void } = {},
): Promise<MessagesOutcome> {
  const parsed = validateMessagesBody(body);
  if (parsed.kind === 'read') {
    if (!(await outbound.markRead(pn.business_id, pn.phone_number_id, parsed.read.messageId))) {
      throw new InvalidParameterError('Parameter message_id is not a message this phone number received');
    }
    return { kind: 'read' };
  }
  const { send } = parsed;
  opts.onSend?.(send);
  const accepted = await outbound.accept({
    businessId: pn.business_id,
    phoneNumberId: pn.phone_number_id,
    waId: send.waId,
    message: send.message,
    ...(send.bizOpaqueCallbackData !== undefined ? { bizOpaqueCallbackData: send.bizOpaqueCallbackData } : {}),
    ...(opts.idempotencyKey !== undefined ? { idempotencyKey: opts.idempotencyKey } : {}),
  });
  return { kind: 'sent', to: send.to, accepted };
}
