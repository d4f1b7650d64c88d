import { describe, expect, it } from 'vitest';
import type { TransportFailure, TransportHandlers } from './feed';
import { sseTransport } from './sse';

function streamResponse(chunks: string[], init: ResponseInit = {}): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' }, ...init });
}

function record() {
  const log: Array<string> = [];
  const failures: TransportFailure[] = [];
  let resolveDone: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const handlers: TransportHandlers = {
    onOpen: () => log.push('open'),
    onEvent: (p, item) => log.push(`event ${p} ${item.type}`),
    onTokenExpired: () => log.push('token_expired'),
    onError: (f) => {
      failures.push(f);
      resolveDone();
    },
  };
  return { log, failures, handlers, done };
}

const frame = (p: number, type = 'UserRegistered') =>
  `id: ${p}\nevent: ${type}\ndata: ${JSON.stringify({ position: p, type, user_pk: 42, sequence: 1, recorded_at: 'x', data: {}, metadata: {} })}\n\n`;

describe('sseTransport', () => {
  it('sends the bearer token and Last-Event-ID as headers, never in the URL', async () => {
    let seen: { url: string; headers: Headers } | null = null;
    const fetchImpl = (async (url: string, init: RequestInit) => {
      seen = { url, headers: new Headers(init.headers) };
      return streamResponse([]);
    }) as unknown as typeof fetch;
    const r = record();
    sseTransport('http://idsync/api/events/stream', fetchImpl).open(17, 'tok', r.handlers);
    await r.done;
    expect(seen!.url).toBe('http://idsync/api/events/stream');
    expect(seen!.headers.get('authorization')).toBe('Bearer tok');
    expect(seen!.headers.get('last-event-id')).toBe('17');
  });

  it('delivers every event type (also split across chunks), token_expired, then the end', async () => {
    const whole = `retry: 3000\n\n:keep-alive\n\n${frame(1)}${frame(2, 'UserUpdated')}${frame(3, 'SomethingNew')}event: token_expired\ndata: the access token expired\n\n`;
    const chunks = [whole.slice(0, 17), whole.slice(17, 100), whole.slice(100)];
    const r = record();
    sseTransport('u', (async () => streamResponse(chunks)) as unknown as typeof fetch).open(0, 't', r.handlers);
    await r.done;
    expect(r.log).toEqual(['open', 'event 1 UserRegistered', 'event 2 UserUpdated', 'event 3 SomethingNew', 'token_expired']);
    expect(r.failures).toEqual([{ message: 'the stream ended' }]);
  });

  it('reports the HTTP status and the server detail of a refusal', async () => {
    const r = record();
    const res = new Response(JSON.stringify({ error: 'invalid_token', detail: 'expired (exp)' }), { status: 401 });
    sseTransport('u', (async () => res) as unknown as typeof fetch).open(0, 't', r.handlers);
    await r.done;
    expect(r.log).toEqual([]);
    expect(r.failures).toEqual([{ status: 401, message: 'expired (exp)' }]);
  });

  it('reports a network error without a status', async () => {
    const r = record();
    sseTransport('u', (async () => {
      throw new TypeError('Failed to fetch');
    }) as unknown as typeof fetch).open(0, 't', r.handlers);
    await r.done;
    expect(r.failures).toEqual([{ message: 'Failed to fetch' }]);
  });

  it('skips frames whose id and data disagree or whose data is not a feed item', async () => {
    const r = record();
    const bad = `id: 5\ndata: ${JSON.stringify({ position: 6, type: 'X', user_pk: 1 })}\n\nid: 7\ndata: <html>\n\n${frame(8)}`;
    sseTransport('u', (async () => streamResponse([bad])) as unknown as typeof fetch).open(0, 't', r.handlers);
    await r.done;
    expect(r.log).toEqual(['open', 'event 8 UserRegistered']);
  });
});
