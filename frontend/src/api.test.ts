import { describe, expect, it } from 'vitest';
import { Api, ApiError } from './api';

function tokens(initial = 'old') {
  let current = initial;
  let renewals = 0;
  return {
    get renewals() {
      return renewals;
    },
    token: async () => current,
    renew: async () => {
      renewals++;
      current = `new-${renewals}`;
      return current;
    },
  };
}

type Call = { url: string; auth: string | null };

function fetchSeq(responses: Array<() => Response>, calls: Call[]): typeof fetch {
  return (async (url: string, init: RequestInit) => {
    calls.push({ url, auth: new Headers(init.headers).get('authorization') });
    const next = responses.shift();
    if (!next) throw new Error('unexpected request');
    return next();
  }) as unknown as typeof fetch;
}

const json = (status: number, body: unknown) => () => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('Api', () => {
  it('sends the bearer token to the configured base URL', async () => {
    const calls: Call[] = [];
    const api = new Api('http://idsync:8080', tokens(), fetchSeq([json(200, { pk: 7 })], calls));
    await expect(api.me()).resolves.toEqual({ pk: 7 });
    expect(calls).toEqual([{ url: 'http://idsync:8080/api/me', auth: 'Bearer old' }]);
  });

  it('renews once after a 401 and retries with the new token', async () => {
    const calls: Call[] = [];
    const t = tokens();
    const api = new Api('', t, fetchSeq([json(401, { error: 'invalid_token', detail: 'expired (exp)' }), json(200, { pk: 7 })], calls));
    await expect(api.me()).resolves.toEqual({ pk: 7 });
    expect(calls.map((c) => c.auth)).toEqual(['Bearer old', 'Bearer new-1']);
    expect(t.renewals).toBe(1);
  });

  it('does not loop on a token the server keeps refusing', async () => {
    const calls: Call[] = [];
    const api = new Api('', tokens(), fetchSeq([json(401, { error: 'invalid_token', detail: 'a' }), json(401, { error: 'invalid_token', detail: 'wrong audience (aud)' })], calls));
    await expect(api.me()).rejects.toMatchObject({ status: 401, code: 'invalid_token', detail: 'wrong audience (aud)' });
    expect(calls).toHaveLength(2);
  });

  it("turns idsync's JSON errors, and others, into ApiError", async () => {
    const api = new Api('', tokens(), fetchSeq([json(404, { error: 'not_found', detail: 'no synced user' }), () => new Response('<h1>Bad gateway</h1>', { status: 502, statusText: 'Bad Gateway' })], []));
    const notFound = await api.me().catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(ApiError);
    expect(notFound).toMatchObject({ status: 404, code: 'not_found', detail: 'no synced user' });
    await expect(api.me()).rejects.toMatchObject({ status: 502, code: 'http_502', detail: 'Bad Gateway' });
  });

  it('builds the users query: keyset after, limit, prefix search, type', async () => {
    const calls: Call[] = [];
    const api = new Api('', tokens(), fetchSeq([json(200, { users: [], next_after: null }), json(200, { users: [], next_after: null })], calls));
    await api.users({ after: 0, q: '' });
    await api.users({ after: 42, limit: 10, q: 'ad a&b', type: 'service_account' });
    expect(calls.map((c) => c.url)).toEqual(['/api/users?limit=25', '/api/users?after=42&limit=10&q=ad+a%26b&type=service_account']);
  });
});
