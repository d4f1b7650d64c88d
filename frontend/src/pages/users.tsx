import { useEffect, useRef, useState } from 'preact/hooks';
import { markRendered, useApp } from '../app';
import { userTypeLabel } from '../format';
import { USER_TYPES, type User } from '../types';

const PAGE_SIZE = 25;

type Load = { kind: 'loading' } | { kind: 'ready'; users: User[]; nextAfter: number | null } | { kind: 'error'; message: string };

/** Admins: every synced user, a page at a time (keyset, as the API pages), with search and a type filter. */
export function UsersPage() {
  const { api, admin } = useApp();
  const [query, setQuery] = useState('');
  const [debounced, setDebounced] = useState('');
  const [type, setType] = useState('');
  // The `after` of each page shown so far: the last is the current page's.
  const [pages, setPages] = useState<number[]>([0]);
  const [load, setLoad] = useState<Load>({ kind: 'loading' });
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    const t = setTimeout(() => setDebounced(query.trim()), 250);
    return () => clearTimeout(t);
  }, [query]);

  useEffect(() => setPages([0]), [debounced, type]);

  const after = pages[pages.length - 1] ?? 0;
  useEffect(() => {
    if (admin === false) return;
    const abort = new AbortController();
    setLoad({ kind: 'loading' });
    api
      .users({ after, limit: PAGE_SIZE, q: debounced, type }, abort.signal)
      .then((page) => {
        setLoad({ kind: 'ready', users: page.users, nextAfter: page.next_after });
        markRendered('users');
      })
      .catch((err: unknown) => {
        if (!abort.signal.aborted) setLoad({ kind: 'error', message: err instanceof Error ? err.message : String(err) });
      });
    return () => abort.abort();
  }, [api, after, debounced, type, admin]);

  if (admin === false) {
    return (
      <section>
        <h1>Users</h1>
        <p class="notice">Only members of idsync's admin group can list users.</p>
      </section>
    );
  }

  const pageNumber = pages.length;
  return (
    <section>
      <h1 ref={heading}>Users</h1>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="user-search">Search</label>
          <input
            id="user-search"
            type="search"
            placeholder="Username, email or name starts with…"
            value={query}
            onInput={(e) => setQuery(e.currentTarget.value)}
            autocomplete="off"
            spellcheck={false}
          />
        </div>
        <div class="field">
          <label for="user-type">Type</label>
          <select id="user-type" value={type} onChange={(e) => setType(e.currentTarget.value)}>
            <option value="">All types</option>
            {USER_TYPES.map((t) => (
              <option key={t} value={t}>
                {userTypeLabel(t)}
              </option>
            ))}
          </select>
        </div>
      </form>
      {load.kind === 'error' ? (
        <p class="notice error" role="alert">
          Could not load users: {load.message}
        </p>
      ) : null}
      <div class="table-scroll" role="region" aria-label="Users" tabIndex={0}>
        <table class="users" aria-busy={load.kind === 'loading'} aria-describedby="users-page-label">
          <thead>
            <tr>
              <th scope="col">Id</th>
              <th scope="col">Username</th>
              <th scope="col">Name</th>
              <th scope="col">Email</th>
              <th scope="col">Type</th>
              <th scope="col">Groups</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody data-testid="user-rows">
            {load.kind === 'ready'
              ? load.users.map((u) => (
                  <tr key={u.pk} data-pk={u.pk}>
                    <td class="num nowrap">{u.pk}</td>
                    <td class="nowrap">
                      <a href={`#/users/${u.pk}`}>{u.username ?? (u.erased ? 'erased' : `#${u.pk}`)}</a>
                    </td>
                    <td>{u.name || (u.erased ? 'erased' : '—')}</td>
                    <td>{u.email || (u.erased ? 'erased' : '—')}</td>
                    <td class="nowrap">{userTypeLabel(u.type)}</td>
                    <td>{u.groups.length ? u.groups.join(', ') : '—'}</td>
                    <td class="nowrap">{u.deleted_at ? 'Deleted' : u.is_active ? 'Active' : 'Inactive'}</td>
                  </tr>
                ))
              : null}
          </tbody>
        </table>
      </div>
      {load.kind === 'ready' && load.users.length === 0 ? <p class="muted">No users match.</p> : null}
      <nav class="pager" aria-label="Pages of users">
        <button type="button" class="secondary" disabled={pages.length <= 1} onClick={() => setPages((p) => p.slice(0, -1))}>
          ← Previous
        </button>
        <span id="users-page-label" aria-live="polite">
          Page {pageNumber}
          {load.kind === 'ready' && load.users.length > 0 ? ` (users ${(pageNumber - 1) * PAGE_SIZE + 1}–${(pageNumber - 1) * PAGE_SIZE + load.users.length})` : ''}
        </span>
        <button
          type="button"
          class="secondary"
          disabled={load.kind !== 'ready' || load.nextAfter === null}
          onClick={() => {
            if (load.kind === 'ready' && load.nextAfter !== null) {
              const next = load.nextAfter;
              setPages((p) => [...p, next]);
            }
          }}
        >
          Next →
        </button>
      </nav>
    </section>
  );
}
