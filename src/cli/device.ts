import type { Command } from 'commander';
import { platformUrlOf } from '../config.ts';
import { CliError, common, config, out, postJson, type CommonOpts } from './common.ts';

/** `device create`: a simulated user device, registered on the platform over HTTP. */
export function deviceCommands(program: Command): void {
  const device = program.command('device').description('simulated user devices on the platform');
  common(device.command('create'))
    .description('register a simulated device (fresh identity and prekeys); prints JSON with wa_id')
    .requiredOption('--phone <e164>', 'the user\'s phone number, E.164 (e.g. +15551234567)')
    .action(async (opts: CommonOpts & { phone: string }) => {
      const c = config(opts);
      const { status, json } = await postJson(`${platformUrlOf(c)}/sim/devices`, { phone: opts.phone });
      if (status !== 200 && status !== 201) throw new CliError(`platform refused the device: ${json?.error ?? `HTTP ${status}`}`);
      out(json);
    });
}
