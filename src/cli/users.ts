import type { Command } from 'commander';
import { CliError, common, out, withProvisioning, type CommonOpts } from './common.ts';

/** `user export|erase`: data requests, one user's data for one business. */
export function userCommands(program: Command): void {
  const user = program.command('user').description("data requests: one user's data for one business");
  for (const action of ['export', 'erase'] as const) {
    common(user.command(action))
      .description(action === 'export' ? 'prints everything held about the user (JSON)' : 'deletes everything held about the user, now')
      .requiredOption('--business <id>', 'business_id')
      .requiredOption('--wa-id <digits>', "the user's number (wa_id)")
      .option('--phone-number-id <id>', "which of the business's numbers (default: its first)")
      .action(async (opts: CommonOpts & { business: string; waId: string; phoneNumberId?: string }) => {
        await withProvisioning(opts, async (p, ctx) => {
          const id = (await p.business(opts.business)).business_id;
          const waId = opts.waId.replace(/[\s+\-()]/g, '');
          if (!/^[1-9]\d{6,14}$/.test(waId)) throw new CliError('--wa-id must be a phone number (digits)');
          const numbers = await ctx.businesses.numbersOf(id);
          const pn = opts.phoneNumberId ?? numbers[0];
          if (!pn || !numbers.includes(pn)) throw new CliError(`--phone-number-id is not a number of business ${id}`);
          if (action === 'export') {
            const data = await ctx.data.export(id, pn, waId);
            if (!data) throw new CliError('Sealpost holds nothing about this user for this business');
            out(data);
          } else {
            out({ success: true, erased: await ctx.data.erase(id, pn, waId) });
          }
        });
      });
  }
}
