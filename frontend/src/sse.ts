// Server-Sent Events over fetch: the bearer token goes in the Authorization header
// (never in the URL), the resume position in Last-Event-ID, and the HTTP status is
// visible (a browser EventSource hides it, so a refused token would look like a network
// error). Parsing is eventsource-parser's, the same parser the `eventsource` package
// uses. Every event type is received, not just those registered by name. Reconnecting
// is FeedClient's job, not this transport's.

import { createParser } from 'eventsource-parser';
import type { Connection, Transport, TransportHandlers } from './feed';
import { asFeedItem } from './types';

async function failureDetail(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { detail?: unknown; error?: unknown };
    if (typeof body.detail === 'string') return body.detail;
    if (typeof body.error === 'string') return body.error;
  } catch {
    // not JSON
  }
  return `HTTP ${response.status}`;
}

export function sseTransport(url: string, fetchImpl: typeof fetch = (...args) => fetch(...args)): Transport {
  return {
    open(lastEventId: number, token: string, handlers: TransportHandlers): Connection {
      const abort = new AbortController();
      let closed = false;
      const fail = (status: number | undefined, message: string) => {
        if (closed) return;
        closed = true;
        abort.abort();
        handlers.onError(status === undefined ? { message } : { status, message });
      };
      void (async () => {
        const response = await fetchImpl(url, {
          headers: {
            accept: 'text/event-stream',
            authorization: `Bearer ${token}`,
            'last-event-id': String(lastEventId),
          },
          cache: 'no-store',
          signal: abort.signal,
        });
        if (response.status !== 200) return fail(response.status, await failureDetail(response));
        if (!(response.headers.get('content-type') ?? '').startsWith('text/event-stream') || !response.body) {
          return fail(undefined, 'the server did not answer with an event stream');
        }
        if (closed) return;
        handlers.onOpen();
        const parser = createParser({
          onEvent: (message) => {
            if (closed) return;
            if (message.event === 'token_expired') {
              handlers.onTokenExpired();
              return;
            }
            const position = Number(message.id);
            if (message.id === undefined || !Number.isSafeInteger(position)) return;
            let item;
            try {
              item = asFeedItem(JSON.parse(message.data));
            } catch {
              item = null;
            }
            if (item && item.position === position) handlers.onEvent(position, item);
          },
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done || closed) break;
          parser.feed(value);
        }
        fail(undefined, 'the stream ended');
      })().catch((err: unknown) => fail(undefined, err instanceof Error ? err.message : String(err)));
      return {
        close() {
          closed = true;
          abort.abort();
        },
      };
    },
  };
}
