// Hash routes (#/profile, #/users/42 ...): a static server needs no rewrite rules, and the
// OIDC redirect URI stays the origin + "/".

import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'home' }
  | { page: 'profile' }
  | { page: 'events' }
  | { page: 'users' }
  | { page: 'user'; pk: number }
  | { page: 'ws' }
  | { page: 'not-found'; path: string };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '') || '/';
  if (path === '/' ) return { page: 'home' };
  if (path === '/profile') return { page: 'profile' };
  if (path === '/events') return { page: 'events' };
  if (path === '/users') return { page: 'users' };
  if (path === '/ws') return { page: 'ws' };
  const user = path.match(/^\/users\/([1-9][0-9]{0,15})$/);
  if (user?.[1]) return { page: 'user', pk: Number(user[1]) };
  return { page: 'not-found', path };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
