import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { loadMasterKey } from '../config.ts';
import { conversationOfWamid, isConversationId } from '../runtime/ids.ts';
import { createRouterContext } from '../runtime/router.ts';
import { parseTrace, replayTrace, TraceFormatError } from '../trace/replay.ts';
import { readTraceLines } from '../trace/store.ts';
import { GROUP_ID } from '../store/groups.ts';
import { CliError, common, config, redisFor, type CommonOpts } from './common.ts';

/** `trace`, `replay`: a conversation's trace as JSON Lines, and re-running one on the pure machine. */
export function traceCommands(program: Command): void {
  common(program.command('trace'))
    .description("writes a conversation's (or a group actor's) trace as JSON Lines to stdout")
    .argument('<id>', 'a conversation id, a wamid, or a group id')
    .action(async (id: string, opts: CommonOpts) => {
      const c = config(opts);
      const conv = isConversationId(id) ? id : conversationOfWamid(id);
      const ctx = createRouterContext(c, await redisFor(c), loadMasterKey(c).keys);
      try {
        if (GROUP_ID.test(id)) {
          const owner = await ctx.groups.store.owner(id);
          const lines = owner ? await (await ctx.stores.forBusiness(ctx.businesses, owner.business_id)).lrange(ctx.keys.groupTrace(owner.business_id, id), 0, -1) : [];
          if (!lines.length) throw new CliError(`no trace for group ${id}`);
          process.stdout.write(lines.join('\n') + '\n');
          return;
        }
        // A wamid that does not name its conversation is looked up in the message index.
        const resolved = conv ?? (JSON.parse((await ctx.redis.get(ctx.keys.messageIndex(id))) ?? 'null') as { c: string } | null)?.c;
        if (!resolved) throw new CliError(`not a conversation id or a known wamid: ${id}`);
        const lines = await readTraceLines(await ctx.stores.forConversation(resolved), ctx.keys.trace(resolved), resolved);
        if (!lines.length) throw new CliError(`no trace for conversation ${resolved}`);
        process.stdout.write(lines.join('\n') + '\n');
      } finally {
        await ctx.close();
      }
    });

  // No common options: replay reads a file and needs neither Redis nor a server.
  program.command('replay')
    .description('re-runs a trace on the pure machine; exit 0 if every state and command matches, else 1 with a diff')
    .argument('<file>', 'a trace, JSON Lines')
    .action(async (file: string) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (e) {
        throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      let result;
      try {
        result = replayTrace(parseTrace(text));
      } catch (e) {
        if (e instanceof TraceFormatError) throw new CliError(`${file}: ${e.message}`);
        throw e;
      }
      if (result.ok) {
        process.stdout.write(`replay ok: ${result.steps} steps in ${result.conversations} conversation(s) or group(s) match\n`);
        return;
      }
      process.stdout.write(`replay diverged at the first differing step:\n${result.diff}\n`);
      process.exitCode = 1;
    });
}
