import type { Command } from 'commander';
import { CliError, common, out, withProvisioning, type CommonOpts } from './common.ts';

/** `stats`, `billing`: a business's daily aggregates and billable messages (no user data). */
export function statsCommands(program: Command): void {
  common(program.command('stats'))
    .description("a business's daily aggregates (accepted, sent, delivered, read, failed by code, inbound); no user data")
    .requiredOption('--business <id>', 'business_id')
    .option('--from <day>', 'first day, YYYY-MM-DD (default: 6 days before --to)')
    .option('--to <day>', 'last day, YYYY-MM-DD (default: today, UTC)')
    .action(async (opts: CommonOpts & { business: string; from?: string; to?: string }) => {
      await withProvisioning(opts, async (p, ctx) => {
        const id = (await p.business(opts.business)).business_id;
        const to = opts.to ?? new Date().toISOString().slice(0, 10);
        const from = opts.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 6 * 86_400_000).toISOString().slice(0, 10);
        if (!/^\d{4}-\d{2}-\d{2}$/.test(from) || !/^\d{4}-\d{2}-\d{2}$/.test(to) || from > to) throw new CliError('--from and --to must be days (YYYY-MM-DD), from <= to');
        out({ business_id: id, days: await ctx.stats.days(id, from, to) });
      });
    });

  common(program.command('billing'))
    .description("a business's billable messages by category for a month")
    .requiredOption('--business <id>', 'business_id')
    .option('--month <month>', 'YYYY-MM (default: this month, UTC)')
    .action(async (opts: CommonOpts & { business: string; month?: string }) => {
      await withProvisioning(opts, async (p, ctx) => {
        const id = (await p.business(opts.business)).business_id;
        const month = opts.month ?? new Date().toISOString().slice(0, 7);
        if (!/^\d{4}-\d{2}$/.test(month)) throw new CliError('--month must be YYYY-MM');
        out(await ctx.stats.billing(id, month));
      });
    });
}
