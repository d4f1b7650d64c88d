// idsync's HTTP API with the caller's bearer token. A 401 renews the token once and
// retries (the token may have expired between the check and the request).

import type { EventsPage, User, UsersPage, WhoAmI } from './types';

/** Where access tokens come from (the Auth service; a fake in tests). */
export interface TokenSource {
  /** A current access token, renewed first when it is about to expire. */
  token(): Promise<string>;
  /** Renews now (after the server refused the token); resolves to the new token. */
  renew(): Promise<string>;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(`${status} ${code}: ${detail}`);
    this.name = 'ApiError';
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let detail = response.statusText || 'request failed';
  try {
    const body = (await response.json()) as { error?: unknown; detail?: unknown };
    if (typeof body.error === 'string') code = body.error;
    if (typeof body.detail === 'string') detail = body.detail;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, code, detail);
}

export class Api {
  constructor(
    readonly baseUrl: string,
    private readonly tokens: TokenSource,
    private readonly fetchImpl: typeof fetch = (...args) => fetch(...args),
  ) {}

  async request<T>(method: 'GET' | 'POST', path: string, signal?: AbortSignal): Promise<T> {
    let token = await this.tokens.token();
    for (let attempt = 0; ; attempt++) {
      const init: RequestInit = { method, headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, cache: 'no-store' };
      if (signal) init.signal = signal;
      const response = await this.fetchImpl(`${this.baseUrl}${path}`, init);
      if (response.status === 401 && attempt === 0) {
        token = await this.tokens.renew();
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      return (await response.json()) as T;
    }
  }

  me(signal?: AbortSignal): Promise<User> {
    return this.request('GET', '/api/me', signal);
  }

  whoami(signal?: AbortSignal): Promise<WhoAmI> {
    return this.request('GET', '/api/whoami', signal);
  }

  users(params: { after?: number; limit?: number; q?: string; type?: string }, signal?: AbortSignal): Promise<UsersPage> {
    const query = new URLSearchParams();
    if (params.after) query.set('after', String(params.after));
    query.set('limit', String(params.limit ?? 25));
    if (params.q) query.set('q', params.q);
    if (params.type) query.set('type', params.type);
    return this.request('GET', `/api/users?${query.toString()}`, signal);
  }

  user(pk: number, signal?: AbortSignal): Promise<User> {
    return this.request('GET', `/api/users/${encodeURIComponent(String(pk))}`, signal);
  }

  userEvents(pk: number, after: number, limit: number, signal?: AbortSignal): Promise<EventsPage> {
    return this.request('GET', `/api/users/${encodeURIComponent(String(pk))}/events?after=${after}&limit=${limit}`, signal);
  }

  streamTicket(): Promise<{ ticket: string; expires_in: number }> {
    return this.request('POST', '/api/stream-tickets');
  }
}
