import type { Command } from '../../machines/commands.ts';
import type { ConversationEvent, ConversationInput } from '../../machines/conversation.ts';
import type { GroupCommand, GroupEvent, GroupInput } from '../../machines/group.ts';

/**
 * One line of a conversation's trace (JSON Lines): the event delivered, the state after it and the commands
 * it emitted. Events and commands carry ids and times, never message content or phone numbers.
 */
export interface TraceLine {
  conversation_id: string;
  /** 1, 2, 3 ... per conversation. */
  seq: number;
  /** The event's time (ms since the epoch), as the machine saw it. */
  at: number;
  event: ConversationEvent;
  /** The machine's state value after the event. */
  state: string;
  commands: Command[];
  /** On the first line of a conversation only: the machine's input, so a replay starts where it started. */
  input?: ConversationInput;
  /**
   * On the first line of a trace whose older lines were deleted (their messages' retention ended): the
   * machine's persisted snapshot before this line, where a replay starts instead.
   */
  before?: unknown;
}

/**
 * One line of a group actor's trace (machines/group.ts, docs/groups.md): the same shape with `group_id`
 * instead of `conversation_id`; members are conversation ids, never numbers.
 */
export interface GroupTraceLine {
  group_id: string;
  seq: number;
  at: number;
  event: GroupEvent;
  state: string;
  commands: GroupCommand[];
  input?: GroupInput;
}
