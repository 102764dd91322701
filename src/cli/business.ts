import { Option, type Command } from 'commander';
import { Provisioning, type NewBusiness } from '../runtime/provisioning.ts';
import { common, config, out, withProvisioning, type CommonOpts } from './common.ts';

/** `business create|list|show|update|delete`: the Business Manager's businesses, by the provisioning service's rules. */
export function businessCommands(program: Command): void {
  const business = program.command('business').description('manage businesses');
  common(business.command('create'))
    .description('provision a business with one phone number; prints JSON')
    .requiredOption('--name <name>', 'business name (also the verified name)')
    .requiredOption('--webhook-url <url>', 'where webhooks go')
    .requiredOption('--app-secret <secret>', 'app secret that signs webhooks (X-Hub-Signature-256)')
    .requiredOption('--verify-token <token>', 'verify token for the subscription check')
    .option('--region <region>', 'region to keep data in')
    .option('--retention <duration>', 'how long messages are kept (e.g. 30d, 10m); default SEALPOST_RETENTION')
    .addOption(new Option('--storage <mode>', "'none': the Cloud API's no-storage mode (content kept at most 60 minutes)").choices(['default', 'none']).default('default'))
    .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
    .action(async (opts: CommonOpts & { name: string; webhookUrl: string; appSecret: string; verifyToken: string; region?: string; retention?: string; storage: 'default' | 'none'; verify: boolean }) => {
      const c = config(opts, true);
      const input: NewBusiness = {
        name: opts.name, webhookUrl: opts.webhookUrl, appSecret: opts.appSecret, verifyToken: opts.verifyToken, storage: opts.storage,
        ...(opts.region !== undefined ? { region: opts.region } : {}), ...(opts.retention !== undefined ? { retention: opts.retention } : {}),
      };
      // Bad input is refused before Redis is resolved (or started); create checks it again, then the webhook.
      Provisioning.newBusiness(input, Object.keys(c.regions));
      await withProvisioning(opts, async (p) => out(await p.create(input, { verify: opts.verify })));
    });

  common(business.command('list'))
    .description('lists the businesses (no secrets); prints JSON')
    .action(async (opts: CommonOpts) => {
      await withProvisioning(opts, async (p) => out({ businesses: await p.list() }));
    });

  common(business.command('show'))
    .description("a business's settings and phone numbers (no secrets); prints JSON")
    .argument('<business_id>')
    .action(async (id: string, opts: CommonOpts) => {
      await withProvisioning(opts, async (p, ctx) => out({ ...(await p.business(id)), phone_numbers: await ctx.businesses.numbersOf(id) }));
    });

  common(business.command('update'))
    .description("changes a business's name, retention, or webhook URL and verify token (checked first)")
    .argument('<business_id>')
    .option('--name <name>')
    .option('--retention <duration>', 'e.g. 30d, 10m (at most 30d)')
    .option('--webhook-url <url>')
    .option('--verify-token <token>')
    .addOption(new Option('--no-verify', 'skip the webhook subscription check'))
    .action(async (id: string, opts: CommonOpts & { name?: string; retention?: string; webhookUrl?: string; verifyToken?: string; verify: boolean }) => {
      const changes = { name: opts.name, retention: opts.retention, webhookUrl: opts.webhookUrl, verifyToken: opts.verifyToken };
      // Refused before Redis is resolved when the changes themselves are wrong.
      Provisioning.businessPatch(changes);
      await withProvisioning(opts, async (p) => {
        await p.update(id, changes, { verify: opts.verify });
        out({ success: true });
      });
    });

  common(business.command('delete'))
    .description('deletes a business: its tokens, numbers and data key (what it still has in Redis can no longer be read)')
    .argument('<business_id>')
    .action(async (id: string, opts: CommonOpts) => {
      await withProvisioning(opts, async (p) => out({ success: await p.delete(id) }));
    });
}

/** `secret rotate`: a business's app secret, generated (and printed once) or given. */
export function secretCommands(program: Command): void {
  const secret = program.command('secret').description("a business's app secret (signs its webhooks)");
  common(secret.command('rotate'))
    .description('replaces the app secret; without --app-secret one is generated and printed once')
    .requiredOption('--business <id>', 'business_id')
    .option('--app-secret <secret>', 'the new secret (at least 8 characters)')
    .action(async (opts: CommonOpts & { business: string; appSecret?: string }) => {
      if (opts.appSecret !== undefined) Provisioning.appSecret(opts.appSecret);
      await withProvisioning(opts, async (p) => {
        const { appSecret, generated } = await p.rotateAppSecret(opts.business, opts.appSecret);
        out(generated ? { success: true, app_secret: appSecret } : { success: true });
      });
    });
}
