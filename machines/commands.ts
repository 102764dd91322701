/**
 * Commands the conversation machine emits and the actor host executes. They carry ids, never content;
 * the results come back to the machine as events.
 */

/** A Cloud API status the business is told about. */
export type StatusName = 'sent' | 'delivered' | 'read' | 'failed';

/** Every command the machine can emit. */
export type Command =
  /** Fetch the device's prekey bundle and build a session (PQXDH); answers BUNDLE_FETCHED or BUNDLE_FAILED. */
  | { type: 'bundle.fetch' }
  /**
   * Encrypt the stored message (or, with `skip`, a notice that `seq` will never come; with `read`, a read
   * receipt for inbound messages) for every device of the user; answers ENCRYPTED or ENCRYPT_FAILED. The
   * message's `dseq` (companions' seqs given before) and `redo` (devices to encrypt afresh) are read from the
   * context the transition left, so the command (and every recorded trace) stays what it was.
   */
  | { type: 'message.encrypt'; wamid: string; seq: number; skip?: true; read?: string[]; senderKey?: { group: string; dist: string } }
  /** A device of the user acknowledged the group's sender key `dist`: the group actor is told (KEY_HELD). */
  | { type: 'group.key_held'; group: string; dist: string; device: number }
  /** The group's sender key `dist` was encrypted for these devices of the user (the list as it is now): the group actor is told (KEY_SENT). */
  | { type: 'group.key_sent'; group: string; dist: string; devices: number[] }
  /** Store the inbound message just decrypted (sealed) and open the customer-service window. */
  | { type: 'inbound.store'; id: string; at: number }
  /** Forward an inbound message to the business (a `messages` webhook). */
  | { type: 'webhook.message'; id: string }
  /** Hand the stored ciphertext to the transport; answers TRANSPORT_ACCEPTED or TRANSPORT_REJECTED. */
  | { type: 'transport.send'; wamid: string }
  /** Tell the business about a status change (a signed webhook). */
  | { type: 'webhook.status'; wamid: string; status: StatusName; at: number; errorCode?: number }
  /** A durable timer: at `at` the host delivers `event` to this conversation. */
  | { type: 'timer.schedule'; id: string; at: number; event: 'BUNDLE_RETRY_DUE' | 'RETRANSMIT_DUE' }
  /** The timer `id` is no longer needed. */
  | { type: 'timer.cancel'; id: string }
  /** Archive the device's (default 1) current Signal session (a retry request named it): the next send needs a fresh bundle. */
  | { type: 'session.archive'; device?: number }
  /** Tell the business the user's identity key changed (a `system` message webhook, as the Cloud API does). */
  | { type: 'webhook.identity_changed'; at: number }
  /** Decrypt the envelope the host holds for `id`; answers SESSION_ACK, RETRY_REQUESTED (a device's retry request) or DECRYPT_FAILED. */
  | { type: 'envelope.decrypt'; id: string }
  /** Delete every message whose retention ended by `upTo` (rows, index entries, their trace lines). */
  | { type: 'store.purge'; upTo: number }
  /** The conversation is over: delete everything about it, the user's phone number and session included. */
  | { type: 'conversation.delete'; erase?: true }
  /** The message's content is no longer needed: delete its body and ciphertext, keep its status. */
  | { type: 'message.forget'; wamid: string };

/** The commands one transition emitted, as the `params` of the machine's `emitCommands` action. */
export interface CommandBatch {
  list: Command[];
}
