import { createActor, type AnyActorScope, type AnyMachineSnapshot, type EventObject } from 'xstate';
import { conversationMachine, type ConversationEvent } from '../../machines/conversation.ts';

type Executable = { type: string; params?: unknown };

/**
 * XState's `transition(machine, snapshot, event)` with one inert actor scope reused for every call.
 *
 * `xstate.transition` builds a fresh inert actor for each event, and building an actor computes the machine's
 * initial snapshot: measured at ~5 % of a worker's CPU in `bench --profile`. The conversation machine spawns
 * no children and runs no actions itself (its only action records commands), so one scope serves every
 * conversation. Same semantics: the next snapshot and the actions XState would have executed, in order.
 */
export function createStepper(): (snapshot: AnyMachineSnapshot, event: ConversationEvent) => [AnyMachineSnapshot, Executable[]] {
  const self = createActor(conversationMachine, { input: { conversationId: '' } });
  let sink: Executable[] = [];
  const scope = {
    self,
    defer: () => {},
    id: '',
    logger: () => {},
    sessionId: '',
    stopChild: () => {},
    system: self.system,
    emit: () => {},
    actionExecutor: (action: Executable) => {
      sink.push(action);
    },
  } as unknown as AnyActorScope;
  return (snapshot, event) => {
    sink = [];
    const next = conversationMachine.transition(snapshot as never, event as EventObject as never, scope as never) as unknown as AnyMachineSnapshot;
    const actions = sink;
    sink = [];
    return [next, actions];
  };
}
