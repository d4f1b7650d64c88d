import { useEffect, useState } from 'preact/hooks';
import { ApiError } from '../api';
import { markRendered, useApp } from '../app';
import { formatTime, userTypeLabel } from '../format';
import { displayName, type User } from '../types';

type State =
  | { kind: 'loading' }
  | { kind: 'ready'; user: User }
  | { kind: 'not-synced'; retryIn: number; attempts: number }
  | { kind: 'error'; message: string; retryIn: number };

/** Seconds before the next look while the user is not synced: 2, 4, 8 ... 30. */
const retryDelay = (attempts: number) => Math.min(30, 2 ** Math.min(attempts, 5));

export function ProfilePage() {
  const { api, session, events } = useApp();
  const [state, setState] = useState<State>({ kind: 'loading' });
  const [tick, setTick] = useState(0);

  // An event about this user (registered, changed) on the live feed: load again at once.
  useEffect(() => {
    let seen = events.rows.at(-1)?.position ?? 0;
    return events.subscribe(() => {
      const rows = events.rows;
      let mine = false;
      for (let i = rows.length - 1; i >= 0; i--) {
        const row = rows[i];
        if (!row || row.position <= seen) break;
        if (String(row.user_pk) === session?.sub) mine = true;
      }
      seen = rows.at(-1)?.position ?? seen;
      if (mine) setTick((t) => t + 1);
    });
  }, [events, session?.sub]);

  useEffect(() => {
    const abort = new AbortController();
    let attempts = 0;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let countdown: ReturnType<typeof setInterval> | null = null;
    const load = async () => {
      try {
        const user = await api.me(abort.signal);
        setState({ kind: 'ready', user });
        markRendered('profile');
      } catch (err) {
        if (abort.signal.aborted) return;
        attempts++;
        const wait = retryDelay(attempts);
        if (err instanceof ApiError && err.status === 404) setState({ kind: 'not-synced', retryIn: wait, attempts });
        else setState({ kind: 'error', message: err instanceof Error ? err.message : String(err), retryIn: wait });
        let left = wait;
        countdown = setInterval(() => {
          left = Math.max(0, left - 1);
          setState((s) => (s.kind === 'not-synced' || s.kind === 'error' ? { ...s, retryIn: left } : s));
        }, 1000);
        timer = setTimeout(() => {
          if (countdown) clearInterval(countdown);
          void load();
        }, wait * 1000);
      }
    };
    void load();
    return () => {
      abort.abort();
      if (timer) clearTimeout(timer);
      if (countdown) clearInterval(countdown);
    };
  }, [api, tick]);

  return (
    <section>
      <h1>Your profile</h1>
      {state.kind === 'loading' ? <p aria-busy="true">Loading your profile…</p> : null}
      {state.kind === 'not-synced' ? (
        <div class="notice" role="status" data-testid="not-synced">
          <p>
            <strong>Your account is not synced yet.</strong> idsync has not received{' '}
            {session?.username ? <>the user “{session.username}”</> : 'your user'} from Authentik yet; it appears as soon as
            Authentik's webhook (or the next reconcile) brings it.
          </p>
          <p>
            Trying again in {state.retryIn} s.{' '}
            <button type="button" class="link" onClick={() => setTick((t) => t + 1)}>
              Try now
            </button>
          </p>
        </div>
      ) : null}
      {state.kind === 'error' ? (
        <div class="notice error" role="alert">
          <p>Could not load your profile: {state.message}</p>
          <p>Trying again in {state.retryIn} s.</p>
        </div>
      ) : null}
      {state.kind === 'ready' ? <UserCard user={state.user} /> : null}
    </section>
  );
}

/** A personal field as a person reads it: its value, "erased" once forgotten, else a dash. */
function personal(user: User, value: string | null): string {
  if (value) return value;
  return user.erased ? 'erased' : '—';
}

export function UserCard({ user }: { user: User }) {
  return (
    <div class="card" data-testid="user-card">
      <div class="card-head">
        <span class="avatar" aria-hidden="true">
          {user.erased ? '?' : displayName(user).slice(0, 1).toUpperCase()}
        </span>
        <div>
          <p class="card-title" data-testid="user-name">
            {displayName(user)}
          </p>
          {user.username ? <p class="muted">@{user.username}</p> : null}
        </div>
        <span class={`badge ${user.is_active && !user.deleted_at ? 'ok' : 'off'}`}>
          {user.deleted_at ? 'Deleted' : user.is_active ? 'Active' : 'Inactive'}
        </span>
        {user.erased ? (
          <span class="badge off" data-testid="user-erased">
            Personal data erased
          </span>
        ) : null}
      </div>
      <dl class="fields">
        <dt>Name</dt>
        <dd>{personal(user, user.name)}</dd>
        <dt>Username</dt>
        <dd data-testid="user-username">{personal(user, user.username)}</dd>
        <dt>Email</dt>
        <dd>{personal(user, user.email)}</dd>
        <dt>Groups</dt>
        <dd>
          {user.groups.length === 0 ? (
            'None'
          ) : (
            <ul class="chips" aria-label="Groups">
              {user.groups.map((g) => (
                <li key={g}>{g}</li>
              ))}
            </ul>
          )}
        </dd>
        <dt>Registered</dt>
        <dd>{formatTime(user.registered_at)}</dd>
        <dt>Active</dt>
        <dd>{user.is_active ? 'Yes' : 'No'}</dd>
        <dt>Type</dt>
        <dd>{userTypeLabel(user.type)}</dd>
        <dt>Authentik id</dt>
        <dd>{user.pk}</dd>
        {user.deleted_at ? (
          <>
            <dt>Deleted</dt>
            <dd>{formatTime(user.deleted_at)}</dd>
          </>
        ) : null}
      </dl>
    </div>
  );
}
