#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError } from './config.ts';
import { RedisUnavailableError } from './redis/resolve.ts';
import { ProvisioningError } from './runtime/provisioning.ts';
import { benchCommand } from './cli/bench.ts';
import { businessCommands, secretCommands } from './cli/business.ts';
import { CliError, cliReason } from './cli/common.ts';
import { deviceCommands } from './cli/device.ts';
import { keysCommands } from './cli/keys.ts';
import { numberCommands } from './cli/number.ts';
import { serveCommands } from './cli/serve.ts';
import { statsCommands } from './cli/stats.ts';
import { tokenCommands } from './cli/tokens.ts';
import { traceCommands } from './cli/trace.ts';
import { userCommands } from './cli/users.ts';

// The command groups live in src/cli/; this file is the entry (`npm run cli`, bin/sealpost.js, `tsx src/cli.ts`).
const program = new Command('sealpost')
  .description('Self-hosted router for end-to-end encrypted business messaging')
  .showHelpAfterError()
  .configureOutput({ outputError: (s, write) => write(s) });

// Registered in the order `sealpost --help` lists them.
serveCommands(program);
businessCommands(program);
numberCommands(program);
secretCommands(program);
deviceCommands(program);
statsCommands(program);
tokenCommands(program);
userCommands(program);
benchCommand(program);
keysCommands(program);
traceCommands(program);

/** Runs the CLI; errors become one line on stderr and exit code 1. */
export async function main(argv = process.argv): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const known = e instanceof CliError || e instanceof ConfigError || e instanceof RedisUnavailableError;
    const reason = e instanceof ProvisioningError ? cliReason(e) : known ? (e as Error).message : `unexpected error: ${(e as Error).message}`;
    process.stderr.write(`sealpost: ${reason}\n`);
    process.exit(1);
  }
}

await main();
