import type { Command } from 'commander';
import { common, out, withContext, withProvisioning, type CommonOpts } from './common.ts';

/** `keys rotate-master|rotate-data`: the master key's wrapping and a business's data key versions. */
export function keysCommands(program: Command): void {
  const keysCmd = program.command('keys').description('key management');
  common(keysCmd.command('rotate-master'))
    .description('re-wraps every business data key with the current master key (SEALPOST_MASTER_KEY); the old one must be in SEALPOST_MASTER_KEY_PREVIOUS')
    .action(async (opts: CommonOpts) => {
      await withContext(opts, async (ctx) => out({ rewrapped: await ctx.dataKeys.rewrapAll() }));
    });

  common(keysCmd.command('rotate-data'))
    .description("adds a version of a business's data key: every process seals with it from its start (about 40 s on), older versions keep opening what they sealed; prints JSON")
    .requiredOption('--business <id>', 'business_id')
    .action(async (opts: CommonOpts & { business: string }) => {
      await withProvisioning(opts, async (p) => {
        const { version, activeAt } = await p.rotateDataKey(opts.business);
        out({ business_id: opts.business, version, active_at: activeAt });
      });
    });
}
