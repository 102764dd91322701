import type { GroupMailboxEvent } from '../group-host.ts';
import type { Logger } from 'pino';
import type { BusinessPreKeys } from '../../signal/business-prekeys.ts';
import type { BusinessStore } from '../../store/businesses.ts';
import type { Keys } from '../../store/keys.ts';
import type { DataKeys } from '../../store/sealer.ts';
import type { Stores } from '../../store/stores.ts';
import type { MediaStore } from '../../media/store.ts';
import type { ChangeValue, StatusInput } from '../../webhook/envelope.ts';
import type { MailboxEvent } from '../mailbox.ts';
import type { TransportClient } from '../transport-client.ts';
import type { createStepper } from '../transition.ts';
import type { WarmStates } from './warm.ts';

/** A status change for the business, as the host hands it to the webhook layer. */
export type StatusUpdate = StatusInput;

/** Where the host sends what leaves the conversation besides the transport. */
export interface HostSinks {
  /**
   * Queues webhook updates (statuses, messages), in order, behind the business's earlier ones; `traces`: the
   * trace contexts of the messages they report on (tracing on), for the delivery's spans.
   */
  webhook(businessId: string, phoneNumberId: string, values: ChangeValue[], traces?: string[]): Promise<void>;
  /** Schedules a durable timer that posts `event` to the conversation's mailbox at `at`. */
  timer(conversationId: string, timerId: string, at: number, event: MailboxEvent): Promise<void>;
  /** Cancels a timer that is no longer needed (a timer already fired or gone is fine). */
  cancelTimer(conversationId: string, timerId: string): Promise<void>;
  /** Adds to the business's aggregate counters (statistics and billing; no user identifiers). */
  count(businessId: string, fields: Record<string, number>): Promise<void>;
  /** Makes sure a deletion job wakes the conversation when a message's retention ends at `until`. */
  purgeAt(conversationId: string, until: number, retentionMs: number): Promise<void>;
  /** Removes the deletion jobs of a deleted conversation. */
  cancelPurges(conversationId: string, untils: number[], retentionMs: number): Promise<void>;
  /** Posts an event to a group actor's mailbox (a member's device holds the group's key; a member's own key). */
  group?(businessId: string, groupId: string, event: GroupMailboxEvent): Promise<void>;
}

/** Settings of the actor host. */
export interface HostOptions {
  retentionMs: number;
  bundleRetryMs: number;
  retransmitBaseMs: number;
  retransmitMaxMs: number;
  leaseMs?: number;
  batchSize?: number;
  /** The trace's bound, in steps (each step: an event and the results of its local commands, ~3 lines). */
  traceMax?: number;
  /** Upper bound of one drain, so one busy conversation cannot hold a worker slot forever. */
  maxStepsPerDrain?: number;
  /** Conversations kept hydrated between drains in this process (warm.ts; 0 = none). Default 4096. */
  warmConversations?: number;
}

/** Receives each committed step's trace lines (for recording traces; unset in production). */
export type TraceTap = (conversationId: string, lines: string[]) => void;

/**
 * What the host's parts share: its collaborators and settings (defaults applied), one per host. Nothing
 * about a conversation lives here but the warm states (warm.ts), which a drain uses only after checking them
 * against what Redis holds: a conversation is `Loaded` (loaded.ts), made for every drain.
 */
export interface HostParts {
  readonly stores: Stores;
  readonly keys: Keys;
  readonly dataKeys: DataKeys;
  readonly businesses: BusinessStore;
  readonly transport: TransportClient;
  readonly sinks: HostSinks;
  readonly log: Logger;
  readonly opts: HostOptions;
  readonly leaseMs: number;
  readonly batchSize: number;
  readonly traceMax: number;
  readonly maxSteps: number;
  readonly transition: ReturnType<typeof createStepper>;
  /** Conversations this process drained lately, still hydrated (used only while still current). */
  readonly warm: WarmStates;
  /** The business number's prekeys, for PreKey messages users send first. */
  readonly preKeysOf?: (phoneNumberId: string) => Promise<BusinessPreKeys>;
  /** Where received media go (sealed, with the business's retention); without it they are not carried. */
  media?: MediaStore;
  /** The trace tap in force, read at every step (tests set and unset it between runs). */
  readonly tap: () => TraceTap | undefined;
}
