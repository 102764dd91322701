import type { Command } from 'commander';
import { serve } from '../serve.ts';
import { common, config, redisFor, type CommonOpts } from './common.ts';

/** `serve`, `api`, `worker`, `platform`: the whole system, or one role per process. */
export function serveCommands(program: Command): void {
  common(program.command('serve'))
    .description('API + workers + embedded platform (unless --platform-url); --demo provisions a demo business and devices')
    .option('--demo', 'provision a demo business, a webhook receiver that prints statuses, and three demo devices')
    .option('--port <port>', 'API port (default: PORT or 8080)')
    .action(async (opts: CommonOpts & { demo?: boolean }) => {
      const c = config(opts, !!opts.demo);
      await serve(c, await redisFor(c), { roles: ['api', 'worker'], embedPlatform: !opts.platformUrl, demo: !!opts.demo });
    });

  common(program.command('api'))
    .description('only the HTTP API')
    .option('--port <port>', 'API port (default: PORT or 8080)')
    .action(async (opts: CommonOpts) => {
      const c = config(opts);
      await serve(c, await redisFor(c), { roles: ['api'], embedPlatform: false, demo: false });
    });

  common(program.command('worker'))
    .description('only the workers (conversation actors, timers, webhooks, transport events)')
    .action(async (opts: CommonOpts) => {
      const c = config(opts);
      await serve(c, await redisFor(c), { roles: ['worker'], embedPlatform: false, demo: false });
    });

  common(program.command('platform'))
    .description('only the simulated transport and user devices (port PLATFORM_PORT or 8081)')
    .option('--port <port>', 'platform port (default: PLATFORM_PORT or 8081)')
    .action(async (opts: CommonOpts) => {
      // --port is the platform's here, not the API's.
      const c = config({ ...opts, port: undefined });
      const { startPlatform } = await import('../platform/server.ts');
      const p = await startPlatform({ host: c.host, port: opts.port ? Number(opts.port) : c.platformPort });
      process.stdout.write(`platform listening on ${p.url}\n`);
      const stop = async () => { await p.close(); process.exit(0); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
