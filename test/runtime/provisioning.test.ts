import { describe, expect, it } from 'vitest';
import { cliReason } from '../../src/cli/common.ts';
import { Provisioning, ProvisioningError, type NewBusiness } from '../../src/runtime/provisioning.ts';

/** The refusal a check throws (fails the test when it throws nothing). */
function refusal(fn: () => unknown): ProvisioningError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProvisioningError);
    return e as ProvisioningError;
  }
  throw new Error('not refused');
}

const good: NewBusiness = { name: 'Shop', webhookUrl: 'https://shop.example/hook', appSecret: 'secret-123', verifyToken: 't' };

/** The provisioning rules, as each front end words them (the admin API uses the message as `details`). */
describe('provisioning rules', () => {
  it('checks a new business: one rule, a field and a stable code, the API and the CLI wording', () => {
    expect(Provisioning.newBusiness({ ...good, retention: '7d', storage: 'none', region: 'eu' }, ['eu'])).toEqual({
      name: 'Shop', webhookUrl: 'https://shop.example/hook', appSecret: 'secret-123', verifyToken: 't', region: 'eu', retentionMs: 7 * 86_400_000, storage: 'none',
    });
    const cases: [Partial<NewBusiness>, string, string, string, string][] = [
      [{ name: '  ' }, 'name', 'empty', 'name must be a string of 1 to 200 characters', '--name must not be empty'],
      [{ name: 'x'.repeat(201) }, 'name', 'too_long', 'name must be a string of 1 to 200 characters', '--name must be a string of 1 to 200 characters'],
      [{ webhookUrl: 'ftp://x' }, 'webhook_url', 'not_http', 'webhook_url must be an http(s) URL', '--webhook-url: not an http(s) URL: ftp://x'],
      [{ appSecret: 'short' }, 'app_secret', 'too_short', 'app_secret must be a string of 8 to 200 characters', '--app-secret must be at least 8 characters'],
      [{ verifyToken: 42 }, 'verify_token', 'invalid', 'verify_token must be a string of 1 to 200 characters', '--verify-token must be a string of 1 to 200 characters'],
      [{ retention: '45d' }, 'retention', 'invalid', 'retention must be a duration up to 30d (e.g. 30d, 12h, 10m)', '--retention must be a duration up to 30d (e.g. 30d, 12h, 10m)'],
      [{ region: 'us' }, 'region', 'not_configured', 'region us is not configured (SEALPOST_REGIONS has: eu)', '--region us is not configured (SEALPOST_REGIONS has: eu)'],
      [{ storage: 'cloud' }, 'storage', 'invalid', "storage must be 'default' or 'none'", "--storage must be 'default' or 'none'"],
    ];
    for (const [change, field, code, api, cli] of cases) {
      const e = refusal(() => Provisioning.newBusiness({ ...good, ...change }, ['eu']));
      expect({ field: e.field, code: e.code, api: e.message, cli: cliReason(e) }).toEqual({ field, code, api, cli });
    }
  });

  it('checks changes to a business: a webhook URL comes with its verify token, and something must change', () => {
    expect(Provisioning.businessPatch({ name: 'B', retention: '10m' })).toEqual({ name: 'B', retentionMs: 600_000 });
    expect(Provisioning.businessPatch({ webhookUrl: 'http://a.example', verifyToken: 'v' })).toEqual({ webhookUrl: 'http://a.example/', verifyToken: 'v' });
    const together = refusal(() => Provisioning.businessPatch({ webhookUrl: 'ftp://x' }));
    expect([together.code, together.message, cliReason(together)]).toEqual(['together',
      'webhook_url and verify_token change together (the new URL is checked with the token)', '--webhook-url and --verify-token go together']);
    const nothing = refusal(() => Provisioning.businessPatch({}));
    expect([nothing.code, nothing.message, cliReason(nothing)]).toEqual(['nothing_to_change',
      'nothing to change: name, retention, webhook_url with verify_token', 'nothing to change: give --name, --retention or --webhook-url with --verify-token']);
    expect(refusal(() => Provisioning.webhookTarget({ url: 'mailto:x@y', verifyToken: 't' })).code).toBe('not_http');
    expect(refusal(() => Provisioning.appSecret('1234567')).code).toBe('too_short');
  });

  it('words refusals that need the store as the CLI always has', () => {
    expect(cliReason(new ProvisioningError('business_id', 'unknown', 'no business 9', '9'))).toBe('no business 9');
    expect(cliReason(new ProvisioningError('phone_number_id', 'last_number', 'a business keeps at least one phone number'))).toBe('a business keeps at least one phone number');
    expect(cliReason(new ProvisioningError('webhook_url', 'refused', 'webhook_url refused: localhost resolves to 127.0.0.1'))).toBe('--webhook-url refused: localhost resolves to 127.0.0.1');
    expect(cliReason(new ProvisioningError('webhook_url', 'subscription_failed', 'webhook subscription check failed: HTTP 403'))).toBe('webhook subscription check failed: HTTP 403');
  });
});
