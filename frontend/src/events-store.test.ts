import { describe, expect, it } from 'vitest';
import { EventsStore } from './events-store';
import type { Transport, TransportHandlers } from './feed';
import type { FeedItem } from './types';

const item = (position: number, data: Record<string, unknown> = {}): FeedItem => ({
  position,
  type: 'UserRegistered',
  user_pk: position,
  sequence: 1,
  recorded_at: '',
  data,
  metadata: {},
});

describe('EventsStore', () => {
  it('keeps the newest rows up to its limit, and remembers usernames', async () => {
    let handlers: TransportHandlers | null = null;
    const transport: Transport = {
      open(_after, _token, h) {
        handlers = h;
        return { close() {} };
      },
    };
    const store = new EventsStore(transport, { token: async () => 't', renew: async () => 't' }, 5);
    store.start();
    await new Promise((r) => setTimeout(r, 0));
    const h = handlers as unknown as TransportHandlers;
    h.onOpen();
    for (let p = 1; p <= 8; p++) h.onEvent(p, item(p, p === 3 ? { username: 'jane' } : {}));
    expect(store.rows.map((r) => r.position)).toEqual([4, 5, 6, 7, 8]);
    expect(store.dropped).toBe(3);
    expect(store.usernames.get(3)).toBe('jane');
    expect(store.state).toBe('live');
    store.stop();
    expect(store.rows).toEqual([]);
    expect(store.state).toBe('stopped');
  });
});
