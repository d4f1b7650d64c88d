import { useEffect, useState } from 'preact/hooks';
import { ApiError } from '../api';
import { markRendered, useApp } from '../app';
import { describeEvent, eventSource, formatTime } from '../format';
import { displayName, type FeedItem, type User } from '../types';
import { UserCard } from './profile';

const PAGE = 100;

/** One user and their history as a timeline, oldest first. */
export function UserPage({ pk }: { pk: number }) {
  const { api } = useApp();
  const [user, setUser] = useState<User | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [events, setEvents] = useState<FeedItem[]>([]);
  const [nextAfter, setNextAfter] = useState<number | null>(0);
  const [loading, setLoading] = useState(false);

  const loadMore = async (after: number, signal?: AbortSignal) => {
    setLoading(true);
    try {
      const page = await api.userEvents(pk, after, PAGE, signal);
      setEvents((e) => (after === 0 ? page.events : [...e, ...page.events]));
      setNextAfter(page.next_after);
    } catch (err) {
      if (!signal?.aborted) setError(err instanceof Error ? err.message : String(err));
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    const abort = new AbortController();
    setUser(null);
    setError(null);
    setEvents([]);
    api
      .user(pk, abort.signal)
      .then((u) => {
        setUser(u);
        markRendered('user');
      })
      .catch((err: unknown) => {
        if (abort.signal.aborted) return;
        setError(err instanceof ApiError && err.status === 404 ? `There is no user ${pk} in idsync.` : err instanceof Error ? err.message : String(err));
      });
    void loadMore(0, abort.signal);
    return () => abort.abort();
  }, [api, pk]);

  return (
    <section>
      <p class="crumbs">
        <a href="#/users">← Users</a>
      </p>
      <h1>{user ? displayName(user) : `User ${pk}`}</h1>
      {error ? (
        <p class="notice error" role="alert">
          {error}
        </p>
      ) : null}
      {user ? <UserCard user={user} /> : null}
      <h2>History</h2>
      <ol class="timeline" data-testid="timeline">
        {events.map((e) => (
          <li key={e.position} data-position={e.position}>
            <span class={`type type-${e.type}`}>{e.type}</span>
            <time dateTime={e.recorded_at}>{formatTime(e.recorded_at)}</time>
            <p>{describeEvent(e)}</p>
            <p class="muted small">
              Position {e.position} · version {e.sequence} · from {eventSource(e)}
            </p>
          </li>
        ))}
      </ol>
      {!loading && events.length === 0 && !error ? <p class="muted">No events for this user.</p> : null}
      {nextAfter !== null && events.length > 0 ? (
        <button type="button" class="secondary" disabled={loading} onClick={() => void loadMore(nextAfter)}>
          {loading ? 'Loading…' : 'Load later events'}
        </button>
      ) : null}
    </section>
  );
}
