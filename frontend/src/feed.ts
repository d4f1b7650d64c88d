// The live event feed's resume logic, independent of the transport.
//
// idsync's event id is the global position, and positions only grow. The client keeps
// the last position it delivered; every (re)connection asks for events after it
// (`Last-Event-ID`), and anything at or below it is dropped. So the table sees every
// event once, in order, across network drops, idsync restarts and token renewals.
//
// When the stream ends because the token expired (`event: token_expired`), the app has
// usually renewed the token already (auth renews ahead of expiry): it reconnects at once
// and the visible state stays "live". A 401 (a token the server refused) shows "token
// expired", renews and reconnects. Network errors and 5xx show "reconnecting" and retry
// with a growing, jittered delay.

import type { TokenSource } from './api';
import type { FeedItem } from './types';

export type FeedState = 'connecting' | 'live' | 'reconnecting' | 'token-expired' | 'failed' | 'stopped';

export interface TransportFailure {
  /** The HTTP status when the server answered, undefined for network errors and stream ends. */
  status?: number;
  message: string;
}

export interface TransportHandlers {
  onOpen(): void;
  onEvent(position: number, item: FeedItem): void;
  /** The server said the token expired; the stream ends after this. */
  onTokenExpired(): void;
  /** The connection failed or ended. Not called after `close()`. */
  onError(failure: TransportFailure): void;
}

export interface Connection {
  close(): void;
}

export interface Transport {
  /** Opens a stream of events after `lastEventId` (exclusive), authenticated by `token`. */
  open(lastEventId: number, token: string, handlers: TransportHandlers): Connection;
}

export interface FeedStats {
  connects: number;
  duplicatesDropped: number;
  tokenRenewals: number;
}

export interface FeedOptions {
  transport: Transport;
  tokens: TokenSource;
  /** Start after this position (exclusive); 0 = from the beginning. */
  after: number;
  onEvent(item: FeedItem): void;
  onState(state: FeedState, detail: string | null): void;
  /** Delay before reconnect attempt n (0-based), in ms. */
  backoff?: (attempt: number) => number;
  timers?: { set(fn: () => void, ms: number): unknown; clear(handle: unknown): void };
}

/** 250 ms, 500 ms, 1 s, 2 s ... at most 10 s, each ±20%. */
export function defaultBackoff(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(10_000, 250 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.8 + 0.4 * random()));
}

const defaultTimers = {
  set: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clear: (handle: unknown) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export class FeedClient {
  private lastId: number;
  private state: FeedState = 'stopped';
  private connection: Connection | null = null;
  /** Bumped on every (re)connect and on stop: callbacks of older connections are ignored. */
  private generation = 0;
  private attempt = 0;
  private retryTimer: unknown = null;
  private running = false;
  readonly stats: FeedStats = { connects: 0, duplicatesDropped: 0, tokenRenewals: 0 };
  private readonly backoff: (attempt: number) => number;
  private readonly timers: NonNullable<FeedOptions['timers']>;

  constructor(private readonly options: FeedOptions) {
    this.lastId = options.after;
    this.backoff = options.backoff ?? ((n) => defaultBackoff(n));
    this.timers = options.timers ?? defaultTimers;
  }

  /** The last position delivered (what the next connection resumes after). */
  get lastEventId(): number {
    return this.lastId;
  }

  get currentState(): FeedState {
    return this.state;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.setState('connecting', null);
    void this.connect(false);
  }

  stop(): void {
    this.running = false;
    this.generation++;
    this.connection?.close();
    this.connection = null;
    if (this.retryTimer !== null) this.timers.clear(this.retryTimer);
    this.retryTimer = null;
    this.setState('stopped', null);
  }

  private setState(state: FeedState, detail: string | null): void {
    this.state = state;
    this.options.onState(state, detail);
  }

  /**
   * Opens a connection after `lastId`. `renew` forces a token renewal first (after a
   * 401). The visible state is left alone: callers set it.
   */
  private async connect(renew: boolean): Promise<void> {
    const generation = ++this.generation;
    this.connection?.close();
    this.connection = null;
    let token: string;
    try {
      if (renew) this.stats.tokenRenewals++;
      token = renew ? await this.options.tokens.renew() : await this.options.tokens.token();
    } catch (err) {
      if (generation !== this.generation || !this.running) return;
      // Signed out, or the provider is unreachable: keep trying; a signed-out app stops us.
      this.setState('token-expired', `cannot renew the access token: ${String(err)}`);
      this.retryLater(generation, true);
      return;
    }
    if (generation !== this.generation || !this.running) return;
    this.stats.connects++;
    const current = () => generation === this.generation && this.running;
    this.connection = this.options.transport.open(this.lastId, token, {
      onOpen: () => {
        if (!current()) return;
        this.attempt = 0;
        this.setState('live', null);
      },
      onEvent: (position, item) => {
        if (!current()) return;
        if (position <= this.lastId) {
          this.stats.duplicatesDropped++;
          return;
        }
        this.lastId = position;
        this.options.onEvent(item);
      },
      onTokenExpired: () => {
        if (!current()) return;
        // Usually the token was renewed ahead of expiry: reconnect at once, quietly.
        void this.connect(false);
      },
      onError: (failure) => {
        if (!current()) return;
        this.connection?.close();
        this.connection = null;
        if (failure.status === 401) {
          this.setState('token-expired', failure.message);
          void this.connect(true);
          return;
        }
        if (failure.status !== undefined && failure.status >= 400 && failure.status < 500 && failure.status !== 429 && failure.status !== 408) {
          this.generation++;
          this.setState('failed', failure.message);
          return;
        }
        this.setState('reconnecting', failure.message);
        this.retryLater(generation, false);
      },
    });
  }

  private retryLater(generation: number, renew: boolean): void {
    if (this.retryTimer !== null) this.timers.clear(this.retryTimer);
    const delay = this.backoff(this.attempt++);
    this.retryTimer = this.timers.set(() => {
      this.retryTimer = null;
      if (generation !== this.generation || !this.running) return;
      void this.connect(renew);
    }, delay);
  }
}
