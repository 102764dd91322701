import { describe, expect, it } from 'vitest';
import { expectError, useApi } from './fixture.ts';

describe('GET /{version}/{phone_number_id}', () => {
  const f = useApi();

  it("answers the number's details, with and without the version segment", async () => {
    for (const url of [`/v23.0/${f.a.phone_number_id}`, `/${f.a.phone_number_id}`]) {
      const res = await f.get(url);
      expect(res.statusCode).toBe(200);
      expect(res.body).toBe(JSON.stringify({
        id: f.a.phone_number_id, display_phone_number: f.a.display_phone_number, verified_name: 'A', quality_rating: 'GREEN', throughput: { level: 'STANDARD' },
        whatsapp_business_manager_messaging_limit: 'TIER_250',
      }));
    }
  });

  it("refuses another business's number exactly like an unknown one, and a missing token with 190", async () => {
    const foreign = expectError(f, await f.get(`/v23.0/${f.a.phone_number_id}`, f.b.access_token), 100, 400);
    const unknown = expectError(f, await f.get('/v23.0/123456789012345'), 100, 400);
    expect(foreign.message).toMatch(/^\(#100\) Unsupported get request\. Object with ID '\d+' does not exist/);
    expect(foreign.message.replace(f.a.phone_number_id, 'ID')).toBe(unknown.message.replace('123456789012345', 'ID'));
    expect({ ...foreign, message: '', fbtrace_id: '' }).toEqual({ ...unknown, message: '', fbtrace_id: '' });
    expectError(f, await f.get(`/v23.0/${f.a.phone_number_id}`, null), 190, 401);
    expectError(f, await f.get(`/${f.a.phone_number_id}`, 'EAASnot-a-token'), 190, 401);
  });
});
