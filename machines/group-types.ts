/**
 * The group machine's types (machines/group.ts): its context, events and commands. Members are conversation
 * ids (a keyed hash of number and user), never phone numbers.
 */

/** A message to the group, until every device owing a receipt has given one, or its TTL ends. */
export interface GroupMessage {
  wamid: string;
  /** Counts the business's messages to the group (informational for devices). */
  seq: number;
  state: 'encrypting' | 'encrypted' | 'sent';
  acceptedAt: number;
  expiresAt: number;
  attempts: number;
  /** When to relay it again if receipts are missing (null while waiting for the transport's answer). */
  nextAttemptAt: number | null;
  /** Per member it was sent to: the devices still owing a receipt (the phone, and every device known to hold the key). */
  owed: Record<string, number[]>;
  /** Per member: the devices that acknowledged it. */
  acked: Record<string, number[]>;
  sentReported: boolean;
  /** Reported `delivered` (every member it was sent to acknowledged it on a device). */
  delivered?: true;
}

export interface GroupSettings {
  retransmitBaseMs: number;
  retransmitMaxMs: number;
  ttlMs: number;
}

export interface GroupContext {
  groupId: string;
  /** The participants (conversation ids), as the group's record last said. */
  members: string[];
  /** The business's current sender key distribution id (null before the first member). */
  dist: string | null;
  /** Per member: the devices known to hold the current sender key (they acknowledged it). */
  keyed: Record<string, number[]>;
  /** Per member: the devices the member's conversation last encrypted the current key for (the member's list). */
  expected?: Record<string, number[]>;
  /**
   * Per member: devices the transport named that the group knew nothing of (linked after the key went out),
   * for which the key was sent to the member again; asked once per device and key.
   */
  reshared?: Record<string, number[]>;
  nextSeq: number;
  messages: GroupMessage[];
  timer: { id: string; at: number } | null;
  /** Members' messages waiting for the member's sender key (it travels on another path and may come later). */
  held: { id: string; member: string; at: number }[];
  /** Per member: the distribution id of the sender key the group holds for the member. */
  memberKeys: Record<string, string>;
  settings: GroupSettings;
}

export interface GroupInput {
  groupId: string;
  retransmitBaseMs?: number;
  retransmitMaxMs?: number;
  ttlMs?: number;
}

/** At most this many members' messages wait for their sender's key; beyond, the oldest is dropped. */
export const MAX_HELD = 64;

export type GroupEvent =
  /** The record's participants (conversation ids), fed by the host when they differ from `members`. */
  | { type: 'MEMBERS'; at: number; members: string[] }
  /** A new sender key (after `key.rotate`): its distribution id. */
  | { type: 'KEY_ROTATED'; at: number; dist: string }
  | { type: 'SEND'; wamid: string; at: number; ttlMs?: number }
  | { type: 'ENCRYPTED'; wamid: string; at: number }
  | { type: 'ENCRYPT_FAILED'; wamid: string; at: number; reason: string }
  /**
   * The transport took it; `present`: the devices it says each member has now (it copies to those). A device
   * owed a receipt that is not among them was unlinked: it owes nothing (the transport can only take devices
   * off what is owed, never add one).
   */
  | { type: 'RELAYED'; wamid: string; at: number; present?: Record<string, number[]> }
  | { type: 'RELAY_FAILED'; wamid: string; at: number; reason: 'unavailable' | 'unknown_group' }
  /** A member's device acknowledged a message of the group. */
  | { type: 'RECEIPT'; wamid: string; at: number; member: string; device: number }
  /** A member's device acknowledged the sender key `dist` (reported by the member's conversation). */
  | { type: 'KEY_HELD'; at: number; member: string; device: number; dist: string }
  /** The member's conversation encrypted the sender key `dist` for these devices (the member's list now). */
  | { type: 'KEY_SENT'; at: number; member: string; devices: number[]; dist: string }
  | { type: 'RETRANSMIT_DUE'; at: number; timerId?: string }
  /** A member wrote to the group (the ciphertext waits in the host). */
  | { type: 'ENVELOPE'; id: string; at: number; member: string }
  | { type: 'MESSAGE_RECEIVED'; id: string; at: number }
  | { type: 'MESSAGE_HELD'; id: string; at: number; member: string }
  | { type: 'DECRYPT_FAILED'; id: string; at: number; reason: string }
  /** A member's sender key arrived over the member's conversation (the key waits, sealed, in the host). */
  | { type: 'MEMBER_KEY'; at: number; member: string; dist: string }
  /** The group was deleted. */
  | { type: 'DELETED'; at: number };

export type GroupCommand =
  /** A new sender key for the group and its distribution message for each member; answers KEY_ROTATED. */
  | { type: 'key.rotate'; members: string[] }
  /**
   * The current sender key's distribution message for these (new) members; with `ifMissing`, only for those
   * whose copy is gone (a copy kept from the member's join covers every message since, a new one only later ones).
   */
  | { type: 'key.share'; members: string[]; ifMissing?: true }
  /** Hand each member's conversation the distribution message (it encrypts it for every device of the member). */
  | { type: 'key.distribute'; members: string[]; dist: string }
  /** groupEncrypt the stored message once; answers ENCRYPTED or ENCRYPT_FAILED. */
  | { type: 'message.encrypt'; wamid: string; seq: number }
  /** Relay the ciphertext to every member device; answers RELAYED or RELAY_FAILED. */
  | { type: 'transport.relay'; wamid: string }
  | { type: 'webhook.status'; wamid: string; status: 'sent' | 'delivered' | 'failed'; at: number; errorCode?: number }
  | { type: 'message.forget'; wamid: string }
  | { type: 'timer.schedule'; id: string; at: number }
  | { type: 'timer.cancel'; id: string }
  /** groupDecrypt a member's message; answers MESSAGE_RECEIVED, MESSAGE_HELD or DECRYPT_FAILED. */
  | { type: 'envelope.decrypt'; id: string; member: string }
  /** Forward a decrypted member's message to the business, then forget it. */
  | { type: 'webhook.message'; id: string }
  /** Drop a held envelope (too many held, or the member left). */
  | { type: 'envelope.forget'; id: string }
  /** Process the member's sender key into the group's store. */
  | { type: 'member_key.store'; member: string; dist: string }
  /** Delete everything of the group actor. */
  | { type: 'group.delete' };
