import type { Logger } from 'pino';
import type { MediaStore } from '../media/store.ts';
import type { BusinessPreKeys } from '../signal/business-prekeys.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Keys } from '../store/keys.ts';
import type { DataKeys } from '../store/sealer.ts';
import type { Stores } from '../store/stores.ts';
import { drainAndCheck } from './host/drain.ts';
import type { HostOptions, HostParts, HostSinks, TraceTap } from './host/parts.ts';
import { createStepper } from './transition.ts';
import { WarmStates } from './host/warm.ts';
import { traceDrain } from './trace-context.ts';
import type { TransportClient } from './transport-client.ts';

// The host's parts, one concept a file under ./host/: drain.ts (the drain loop) and lease.ts (the fenced lease),
// load.ts (hydrating a conversation), step.ts (a step: the machine and its local commands, local-commands.ts,
// inbound-media.ts), commit.ts (the atomic commit, lua/commit.lua), effects.ts (what leaves after a commit)
// and trace-compaction.ts (the trace pruned at retention, halved at its bound).
export { CommitConflictError, defineCommitScript } from './host/commit.ts';
export { LeaseBusyError } from './host/lease.ts';
export type { HostOptions, HostSinks, StatusUpdate } from './host/parts.ts';

/**
 * The actor host: hydrates a conversation from Redis, runs its mailbox through the pure machine one event at
 * a time, executes the commands, and commits snapshot + Signal session + message rows + trace atomically
 * under a fenced single-writer lease. Between drains a process may keep a conversation hydrated (host/warm.ts),
 * used only when Redis still holds exactly the state it was committed as.
 */
export class ActorHost {
  /**
   * For recording traces (test/traces/record.spec.ts): receives each committed step's trace lines, also those
   * of the step that deleted the conversation and its stored trace with it. Unset in production.
   */
  static traceTap: TraceTap | undefined;

  private readonly parts: HostParts;

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    private readonly businesses: BusinessStore,
    private readonly transport: TransportClient,
    private readonly sinks: HostSinks,
    private readonly log: Logger,
    private readonly opts: HostOptions,
    /** The business number's prekeys, for PreKey messages users send first. */
    private readonly preKeysOf?: (phoneNumberId: string) => Promise<BusinessPreKeys>,
  ) {
    this.parts = {
      stores: this.stores,
      keys: this.keys,
      dataKeys: this.dataKeys,
      businesses: this.businesses,
      transport: this.transport,
      sinks: this.sinks,
      log: this.log,
      opts: this.opts,
      leaseMs: opts.leaseMs ?? 15_000,
      batchSize: opts.batchSize ?? 64,
      traceMax: opts.traceMax ?? 300,
      maxSteps: opts.maxStepsPerDrain ?? 50,
      transition: createStepper(),
      warm: new WarmStates(opts.warmConversations ?? 4096),
      preKeysOf: this.preKeysOf,
      tap: () => ActorHost.traceTap,
    };
  }

  /** Runs everything waiting in the conversation's mailbox. Returns the number of events handled. */
  async drain(conversationId: string): Promise<number> {
    return (await this.drainAndCheck(conversationId)).handled;
  }

  /**
   * Drains the conversation's mailbox under its lease; `pending` tells whether events arrived meanwhile (the
   * worker then wakes the conversation again).
   */
  async drainAndCheck(conversationId: string): Promise<{ handled: number; pending: boolean }> {
    return traceDrain(conversationId, () => drainAndCheck(this.parts, conversationId));
  }

  /** Where received media go (sealed, with the business's retention); without it they are not carried. */
  useMedia(media: MediaStore): void {
    this.parts.media = media;
  }
}
