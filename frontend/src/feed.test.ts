import { describe, expect, it, vi } from 'vitest';
import { defaultBackoff, FeedClient, type FeedState, type Transport, type TransportHandlers } from './feed';
import type { FeedItem } from './types';

const item = (position: number, user_pk = 42): FeedItem => ({
  position,
  type: 'UserUpdated',
  user_pk,
  sequence: position,
  recorded_at: '2026-01-01T00:00:00Z',
  data: { pk: user_pk },
  metadata: { source: 'webhook' },
});

interface Opened {
  lastEventId: number;
  token: string;
  handlers: TransportHandlers;
  closed: boolean;
}

function harness(opts: { tokens?: string[]; renewFails?: number } = {}) {
  const opened: Opened[] = [];
  const transport: Transport = {
    open(lastEventId, token, handlers) {
      const o: Opened = { lastEventId, token, handlers, closed: false };
      opened.push(o);
      return { close: () => void (o.closed = true) };
    },
  };
  let current = 'token-1';
  let renewals = 0;
  let renewFails = opts.renewFails ?? 0;
  const tokens = {
    token: vi.fn(async () => current),
    renew: vi.fn(async () => {
      if (renewFails > 0) {
        renewFails--;
        throw new Error('provider unreachable');
      }
      renewals++;
      current = `token-${renewals + 1}`;
      return current;
    }),
  };
  const delivered: number[] = [];
  const states: FeedState[] = [];
  const timers: Array<{ fn: () => void; ms: number }> = [];
  const client = new FeedClient({
    transport,
    tokens,
    after: 0,
    onEvent: (i) => delivered.push(i.position),
    onState: (s) => states.push(s),
    backoff: (n) => 100 * 2 ** n,
    timers: { set: (fn, ms) => timers.push({ fn, ms }), clear: () => {} },
  });
  const flush = () => new Promise((r) => setTimeout(r, 0));
  return {
    client,
    opened,
    tokens,
    delivered,
    states,
    timers,
    flush,
    renewTo(token: string) {
      current = token;
    },
    last: () => opened[opened.length - 1] as Opened,
  };
}

describe('FeedClient resume logic', () => {
  it('starts after the given position and delivers events in order', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    expect(h.opened).toHaveLength(1);
    expect(h.last().lastEventId).toBe(0);
    expect(h.last().token).toBe('token-1');
    h.last().handlers.onOpen();
    for (const p of [1, 2, 3]) h.last().handlers.onEvent(p, item(p));
    expect(h.delivered).toEqual([1, 2, 3]);
    expect(h.states).toEqual(['connecting', 'live']);
    expect(h.client.lastEventId).toBe(3);
  });

  it('after a network drop, reconnects after the last delivered position and drops what it already has', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    h.last().handlers.onOpen();
    for (const p of [1, 2, 3]) h.last().handlers.onEvent(p, item(p));
    h.last().handlers.onError({ message: 'network error' });
    expect(h.states.at(-1)).toBe('reconnecting');
    expect(h.opened[0]?.closed).toBe(true);
    expect(h.timers).toHaveLength(1);
    h.timers[0]?.fn();
    await h.flush();
    expect(h.opened).toHaveLength(2);
    expect(h.last().lastEventId).toBe(3);
    h.last().handlers.onOpen();
    // A server that replays (it should not, but a proxy might): nothing twice.
    for (const p of [2, 3, 4, 5]) h.last().handlers.onEvent(p, item(p));
    expect(h.delivered).toEqual([1, 2, 3, 4, 5]);
    expect(h.client.stats.duplicatesDropped).toBe(2);
    expect(h.states).toEqual(['connecting', 'live', 'reconnecting', 'live']);
  });

  it('keeps retrying through a restart with growing delays, and resets them once connected', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    h.last().handlers.onOpen();
    h.last().handlers.onEvent(7, item(7));
    for (let i = 0; i < 3; i++) {
      h.last().handlers.onError({ message: 'connection refused' });
      h.timers.at(-1)?.fn();
      await h.flush();
      expect(h.last().lastEventId).toBe(7);
    }
    expect(h.timers.map((t) => t.ms)).toEqual([100, 200, 400]);
    h.last().handlers.onOpen();
    h.last().handlers.onError({ status: 503, message: 'issuer unavailable' });
    expect(h.timers.at(-1)?.ms).toBe(100);
  });

  it('on token_expired reconnects at once with the renewed token, without a visible state change', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    h.last().handlers.onOpen();
    h.last().handlers.onEvent(10, item(10));
    h.renewTo('token-renewed-ahead');
    h.last().handlers.onTokenExpired();
    await h.flush();
    expect(h.opened).toHaveLength(2);
    expect(h.opened[0]?.closed).toBe(true);
    expect(h.last()).toMatchObject({ lastEventId: 10, token: 'token-renewed-ahead' });
    h.last().handlers.onOpen();
    h.last().handlers.onEvent(11, item(11));
    expect(h.states).toEqual(['connecting', 'live', 'live']);
    expect(h.delivered).toEqual([10, 11]);
    expect(h.timers).toHaveLength(0);
  });

  it('after a 401 shows token expired, renews, and reopens with the last id', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    h.last().handlers.onOpen();
    h.last().handlers.onEvent(4, item(4));
    h.last().handlers.onError({ status: 401, message: 'expired (exp)' });
    expect(h.states.at(-1)).toBe('token-expired');
    await h.flush();
    expect(h.tokens.renew).toHaveBeenCalledTimes(1);
    expect(h.last()).toMatchObject({ lastEventId: 4, token: 'token-2' });
    h.last().handlers.onOpen();
    expect(h.states.at(-1)).toBe('live');
    expect(h.client.stats.tokenRenewals).toBe(1);
  });

  it('retries a failed renewal later, still resuming after the last id', async () => {
    const h = harness({ renewFails: 1 });
    h.client.start();
    await h.flush();
    h.last().handlers.onOpen();
    h.last().handlers.onEvent(9, item(9));
    h.last().handlers.onError({ status: 401, message: 'expired' });
    await h.flush();
    expect(h.opened).toHaveLength(1);
    expect(h.states.at(-1)).toBe('token-expired');
    h.timers.at(-1)?.fn();
    await h.flush();
    expect(h.tokens.renew).toHaveBeenCalledTimes(2);
    expect(h.last()).toMatchObject({ lastEventId: 9, token: 'token-2' });
  });

  it('ignores anything a closed connection still delivers', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    const first = h.last();
    first.handlers.onOpen();
    first.handlers.onEvent(1, item(1));
    first.handlers.onTokenExpired();
    await h.flush();
    first.handlers.onEvent(2, item(2));
    first.handlers.onError({ message: 'late' });
    expect(h.delivered).toEqual([1]);
    expect(h.opened).toHaveLength(2);
    expect(h.timers).toHaveLength(0);
  });

  it('stops on a refusal that retrying cannot fix', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    h.last().handlers.onError({ status: 400, message: 'Last-Event-ID must be a position' });
    expect(h.states.at(-1)).toBe('failed');
    expect(h.timers).toHaveLength(0);
  });

  it('stop() closes the stream and delivers nothing more', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    const c = h.last();
    c.handlers.onOpen();
    h.client.stop();
    c.handlers.onEvent(1, item(1));
    expect(c.closed).toBe(true);
    expect(h.delivered).toEqual([]);
    expect(h.states.at(-1)).toBe('stopped');
  });

  it('resumes correctly across many reconnects and renewals in a row', async () => {
    const h = harness();
    h.client.start();
    await h.flush();
    let next = 1;
    for (let round = 0; round < 20; round++) {
      const c = h.last();
      c.handlers.onOpen();
      // The server resumes exactly after lastEventId; deliver a few, sometimes repeat one.
      const start = c.lastEventId + 1;
      expect(start).toBe(next);
      for (let p = start; p < start + 3; p++) c.handlers.onEvent(p, item(p));
      c.handlers.onEvent(start + 1, item(start + 1));
      next = start + 3;
      const how = round % 3;
      if (how === 0) c.handlers.onError({ message: 'drop' });
      if (how === 1) c.handlers.onTokenExpired();
      if (how === 2) c.handlers.onError({ status: 401, message: 'expired' });
      if (how === 0) h.timers.at(-1)?.fn();
      await h.flush();
    }
    expect(h.delivered).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
  });
});

describe('defaultBackoff', () => {
  it('grows from 250 ms to at most 10 s, with ±20% jitter', () => {
    expect(defaultBackoff(0, () => 0.5)).toBe(250);
    expect(defaultBackoff(3, () => 0.5)).toBe(2000);
    expect(defaultBackoff(30, () => 0.5)).toBe(10_000);
    expect(defaultBackoff(0, () => 0)).toBe(200);
    expect(defaultBackoff(0, () => 1)).toBe(300);
  });
});
