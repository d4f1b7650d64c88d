import { createContext, type ComponentChildren } from 'preact';
import { useContext, useEffect, useMemo, useState } from 'preact/hooks';
import { Api } from './api';
import { Auth, type Session } from './auth';
import type { AppConfig } from './config';
import { EventsStore } from './events-store';
import { useRoute, type Route } from './router';
import { sseTransport } from './sse';
import { EventsPage } from './pages/events';
import { GatewayPage } from './pages/gateway';
import { HomePage } from './pages/home';
import { ProfilePage } from './pages/profile';
import { UserPage } from './pages/user';
import { UsersPage } from './pages/users';

export interface AppContextValue {
  config: AppConfig;
  auth: Auth;
  api: Api;
  session: Session | null;
  /** From idsync's /api/whoami (the groups claim); null while unknown. */
  admin: boolean | null;
  events: EventsStore;
}

const AppContext = createContext<AppContextValue | null>(null);

export function useApp(): AppContextValue {
  const value = useContext(AppContext);
  if (!value) throw new Error('useApp outside <App>');
  return value;
}

/** Marks the first meaningful render once (the end-to-end test reads it). */
export function markRendered(what: string): void {
  if (typeof performance === 'undefined') return;
  if (performance.getEntriesByName('idsync:first-render').length === 0) {
    performance.mark('idsync:first-render', { detail: what });
  }
}

const TITLES: Record<Route['page'], string> = {
  home: 'Welcome',
  profile: 'Your profile',
  events: 'Live events',
  users: 'Users',
  user: 'User',
  ws: 'Gateway WebSocket',
  'not-found': 'Not found',
};

export function App({ config, auth, initialError }: { config: AppConfig; auth: Auth; initialError: string | null }) {
  const [session, setSession] = useState<Session | null>(auth.session);
  const [admin, setAdmin] = useState<boolean | null>(null);
  const api = useMemo(() => new Api(config.apiBaseUrl, auth), [config, auth]);
  const events = useMemo(() => new EventsStore(sseTransport(`${config.apiBaseUrl}/api/events/stream`), auth), [config, auth]);
  const route = useRoute();
  const sub = session?.sub ?? null;

  useEffect(() => auth.subscribe(setSession), [auth]);

  useEffect(() => {
    if (sub === null) {
      setAdmin(null);
      events.stop();
      return;
    }
    events.start();
    const abort = new AbortController();
    api
      .whoami(abort.signal)
      .then((who) => setAdmin(who.admin))
      .catch(() => {
        if (!abort.signal.aborted) setAdmin(false);
      });
    return () => abort.abort();
  }, [sub, api, events]);

  useEffect(() => {
    document.title = `${TITLES[route.page]} · idsync`;
  }, [route.page]);

  useEffect(() => {
    if (route.page === 'home' && session) window.location.replace('#/profile');
  }, [route.page, session]);

  const value: AppContextValue = { config, auth, api, session, admin, events };
  return (
    <AppContext.Provider value={value}>
      <a class="skip-link" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <Header route={route} />
      <main id="main" tabIndex={-1}>
        {initialError ? (
          <p class="notice error" role="alert">
            {initialError}
          </p>
        ) : null}
        <Page route={route} />
      </main>
    </AppContext.Provider>
  );
}

function NavLink({ href, current, children }: { href: string; current: boolean; children: ComponentChildren }) {
  return (
    <a href={href} aria-current={current ? 'page' : undefined}>
      {children}
    </a>
  );
}

function Header({ route }: { route: Route }) {
  const { auth, session, admin } = useApp();
  const here = route.page;
  return (
    <header class="top">
      <a class="brand" href="#/">
        idsync
      </a>
      <nav aria-label="Main">
        {session ? (
          <>
            <NavLink href="#/profile" current={here === 'profile' || here === 'home'}>
              Profile
            </NavLink>
            <NavLink href="#/events" current={here === 'events'}>
              Live events
            </NavLink>
            {admin ? (
              <NavLink href="#/users" current={here === 'users' || here === 'user'}>
                Users
              </NavLink>
            ) : null}
          </>
        ) : null}
        <NavLink href="#/ws" current={here === 'ws'}>
          WebSocket
        </NavLink>
      </nav>
      <div class="account">
        {session ? (
          <>
            <span class="who" data-testid="signed-in-as">
              {session.name ?? session.username ?? session.sub}
            </span>
            <button type="button" class="secondary" onClick={() => void auth.signOut()}>
              Sign out
            </button>
          </>
        ) : (
          <button type="button" onClick={() => void auth.signIn(window.location.hash || '#/profile')}>
            Sign in
          </button>
        )}
      </div>
    </header>
  );
}

function Page({ route }: { route: Route }) {
  const { session } = useApp();
  if (route.page === 'ws') return <GatewayPage />;
  if (route.page === 'home' || !session) return <HomePage returnTo={route.page === 'home' ? '#/profile' : window.location.hash} />;
  switch (route.page) {
    case 'profile':
      return <ProfilePage />;
    case 'events':
      return <EventsPage />;
    case 'users':
      return <UsersPage />;
    case 'user':
      return <UserPage pk={route.pk} />;
    case 'not-found':
      return (
        <section>
          <h1>Not found</h1>
          <p>
            There is no page at <code>{route.path}</code>. <a href="#/profile">Go to your profile</a>.
          </p>
        </section>
      );
  }
}
