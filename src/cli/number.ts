import { Option, type Command } from 'commander';
import { Provisioning } from '../runtime/provisioning.ts';
import { CliError, common, out, withProvisioning, type CommonOpts } from './common.ts';

/** `number add|list|remove|set-webhook`: a business's phone numbers, by the provisioning service's rules. */
export function numberCommands(program: Command): void {
  const number = program.command('number').description("a business's phone numbers");
  common(number.command('add'))
    .description('adds a phone number (its own Signal identity, published to the transport); prints JSON')
    .requiredOption('--business <id>', 'business_id')
    .option('--verified-name <name>', 'the name users see (default: the business name)')
    .action(async (opts: CommonOpts & { business: string; verifiedName?: string }) => {
      await withProvisioning(opts, async (p) => out(await p.addNumber(opts.business, opts.verifiedName !== undefined ? { verifiedName: opts.verifiedName } : {})));
    });

  common(number.command('list'))
    .description("a business's phone numbers; prints JSON")
    .requiredOption('--business <id>', 'business_id')
    .action(async (opts: CommonOpts & { business: string }) => {
      await withProvisioning(opts, async (p) => {
        const data = (await p.numbers(opts.business)).map((n) => ({
          phone_number_id: n.phone_number_id, display_phone_number: n.display_phone_number, verified_name: n.verified_name, quality_rating: n.quality_rating, webhook_url: n.webhook_url,
        }));
        out({ business_id: opts.business, data });
      });
    });

  common(number.command('remove'))
    .description('removes a phone number (a business keeps at least one)')
    .requiredOption('--business <id>', 'business_id')
    .argument('<phone_number_id>')
    .action(async (pn: string, opts: CommonOpts & { business: string }) => {
      await withProvisioning(opts, async (p) => {
        await p.removeNumber(opts.business, pn);
        out({ success: true });
      });
    });

  common(number.command('set-webhook'))
    .description("gives a number its own webhook URL (checked first), or --clear to use its business's again")
    .requiredOption('--business <id>', 'business_id')
    .argument('<phone_number_id>')
    .option('--webhook-url <url>')
    .option('--verify-token <token>')
    .option('--clear', "use the business's webhook again")
    .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
    .action(async (pn: string, opts: CommonOpts & { business: string; webhookUrl?: string; verifyToken?: string; clear?: boolean; verify: boolean }) => {
      if (!opts.clear && (!opts.webhookUrl || !opts.verifyToken)) throw new CliError('give --webhook-url and --verify-token, or --clear');
      const target = opts.clear ? null : { url: opts.webhookUrl, verifyToken: opts.verifyToken };
      // Refused before Redis is resolved when the URL itself is wrong.
      if (target) Provisioning.webhookTarget(target);
      await withProvisioning(opts, async (p) => {
        await p.setNumberWebhook(opts.business, pn, target, { verify: opts.verify });
        out({ success: true });
      });
    });
}
