import { LRUCache } from 'lru-cache';
import type { AnyMachineSnapshot } from 'xstate';
import type { DeviceSessions } from '../../signal/device-sessions.ts';
import type { NumberIdentity } from '../../store/businesses.ts';
import type { RowInfo } from './loaded.ts';

/**
 * A conversation as this process's last drain of it left it: the machine snapshot and the Signal state in
 * memory, and the stored form they were read from or committed as.
 */
export interface WarmState {
  /** The sealed snapshot bytes in Redis that this state is (read by the drain, or written by its commit). */
  stored: Buffer;
  version: string;
  /** The meta hash's sealed user number, and what it opens to. */
  waSealed: string;
  waId: string;
  /** The business number as the Signal addresses name it. */
  display: string;
  identity: NumberIdentity;
  snapshot: AnyMachineSnapshot;
  crypto: DeviceSessions;
  /** Status fields of its outbound rows (Loaded.rowInfo): rows change only by commits, which this state saw. */
  rowInfo: Map<string, RowInfo>;
}

/**
 * Conversations drained here lately, kept hydrated so the next drain need not open, inflate and resolve the
 * snapshot and deserialize the Signal session again. Nothing here is trusted on its own: a drain still takes
 * the lease and reads the stored state in the same round trip, and uses an entry only when the stored
 * snapshot is byte for byte the one the entry holds (a sealed value carries a random IV, so equal bytes mean
 * no other commit, by any process, came in between: not even one after a delete and a re-creation) and the
 * version matches. An entry is taken out for the whole drain and put back only when the drain ended cleanly
 * (every step committed), so a failed or conflicting drain never leaves a state ahead of Redis.
 */
export class WarmStates {
  private readonly entries: LRUCache<string, WarmState> | null;

  constructor(max: number) {
    this.entries = max > 0 ? new LRUCache<string, WarmState>({ max }) : null;
  }

  /** Takes the conversation's entry out (a drain owns it until it puts it back). */
  take(conversationId: string): WarmState | undefined {
    const e = this.entries?.get(conversationId);
    if (e) this.entries!.delete(conversationId);
    return e;
  }

  keep(conversationId: string, state: WarmState): void {
    this.entries?.set(conversationId, state);
  }

  forget(conversationId: string): void {
    this.entries?.delete(conversationId);
  }

  get size(): number {
    return this.entries?.size ?? 0;
  }
}
