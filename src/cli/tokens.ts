import type { Command } from 'commander';
import { parseDuration } from '../config.ts';
import { CliError, common, out, withProvisioning, type CommonOpts } from './common.ts';

/** `token create|revoke|list`: a business's access tokens (shown once, stored hashed). */
export function tokenCommands(program: Command): void {
  const token = program.command('token').description("a business's access tokens (shown once, stored hashed)");
  common(token.command('create'))
    .description('issues an access token; prints JSON with access_token (shown only now), token_id, expires_at')
    .requiredOption('--business <id>', 'business_id')
    .option('--expires-in <duration>', 'e.g. 90d, 12h (default: no expiry)')
    .action(async (opts: CommonOpts & { business: string; expiresIn?: string }) => {
      await withProvisioning(opts, async (p, ctx) => {
        const id = (await p.business(opts.business)).business_id;
        let ms: number | undefined;
        if (opts.expiresIn) {
          try {
            ms = parseDuration(opts.expiresIn);
          } catch (e) {
            throw new CliError(`--expires-in: ${(e as Error).message}`);
          }
        }
        out(await ctx.businesses.issueToken(id, ms));
      });
    });

  common(token.command('revoke'))
    .description('revokes a token by its id')
    .requiredOption('--business <id>', 'business_id')
    .requiredOption('--token-id <id>', 'token_id (from token create or token list)')
    .action(async (opts: CommonOpts & { business: string; tokenId: string }) => {
      await withProvisioning(opts, async (p, ctx) => {
        const id = (await p.business(opts.business)).business_id;
        if (!(await ctx.businesses.revokeToken(id, opts.tokenId))) throw new CliError(`business ${id} has no token ${opts.tokenId}`);
        out({ success: true });
      });
    });

  common(token.command('list'))
    .description("lists a business's tokens (ids, expiry, revoked)")
    .requiredOption('--business <id>', 'business_id')
    .action(async (opts: CommonOpts & { business: string }) => {
      await withProvisioning(opts, async (p, ctx) => {
        const id = (await p.business(opts.business)).business_id;
        out({ business_id: id, tokens: await ctx.businesses.tokens(id) });
      });
    });
}
