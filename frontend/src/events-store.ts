// The live table's rows and connection state, kept for as long as the person is signed
// in (switching pages does not lose rows or reconnect).

import { FeedClient, type FeedState, type Transport } from './feed';
import type { TokenSource } from './api';
import type { FeedItem } from './types';

/** Rows kept in memory; the oldest go first beyond this. */
export const MAX_ROWS = 100_000;

export class EventsStore {
  /** Oldest first. */
  rows: FeedItem[] = [];
  /** Bumped on every change (rows or state), for views to re-render. */
  version = 0;
  state: FeedState = 'stopped';
  detail: string | null = null;
  /** Rows dropped from the front when over MAX_ROWS. */
  dropped = 0;
  /** Usernames by pk, from the events seen (a UserUpdated carries only what changed). */
  readonly usernames = new Map<number, string>();
  private client: FeedClient | null = null;
  private readonly listeners = new Set<() => void>();
  private notifyScheduled = false;

  constructor(
    private readonly transport: Transport,
    private readonly tokens: TokenSource,
    private readonly maxRows = MAX_ROWS,
  ) {}

  get feed(): FeedClient | null {
    return this.client;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Coalesces bursts (a backlog arrives thousands at a time) into one render per frame. */
  private changed(): void {
    this.version++;
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    const run = () => {
      this.notifyScheduled = false;
      for (const l of this.listeners) l();
    };
    if (typeof requestAnimationFrame === 'function' && typeof document !== 'undefined' && document.visibilityState === 'visible') {
      requestAnimationFrame(run);
    } else {
      setTimeout(run, 0);
    }
  }

  start(): void {
    if (this.client) return;
    this.client = new FeedClient({
      transport: this.transport,
      tokens: this.tokens,
      after: 0,
      onEvent: (item) => {
        const username = item.data.username;
        if (typeof username === 'string' && username !== '') this.usernames.set(item.user_pk, username);
        this.rows.push(item);
        if (this.rows.length > this.maxRows) {
          const extra = this.rows.length - this.maxRows;
          this.rows.splice(0, extra);
          this.dropped += extra;
        }
        this.changed();
      },
      onState: (state, detail) => {
        if (typeof performance !== 'undefined') performance.mark(`idsync:feed-${state}`);
        this.state = state;
        this.detail = detail;
        this.changed();
      },
    });
    this.client.start();
  }

  stop(): void {
    this.client?.stop();
    this.client = null;
    this.rows = [];
    this.dropped = 0;
    this.usernames.clear();
    this.changed();
  }
}
