// Sign-in, renewal and sign-out with OpenID Connect (oidc-client-ts): authorization code
// + PKCE, tokens renewed with the refresh token (offline_access), never a hidden iframe
// (third-party cookies make iframe renewal fail once the provider is on another site).

import { ErrorResponse, OidcClient, UserManager, type User as OidcUser, type UserManagerSettings } from 'oidc-client-ts';
import type { TokenSource } from './api';
import type { AppConfig } from './config';

export interface Session {
  accessToken: string;
  /** Unix seconds. */
  expiresAt: number;
  sub: string;
  name: string | null;
  username: string | null;
  email: string | null;
}

/** Thrown by token()/renew() when there is no session to renew (sign in again). */
export class SignedOutError extends Error {
  constructor(message = 'signed out') {
    super(message);
    this.name = 'SignedOutError';
  }
}

/** What the app keeps across the round trip to the provider. */
interface RoundTripState {
  returnTo: string;
}

/** Seconds before expiry at which the token is renewed: a quarter of its life, 2..60 s. */
export function renewMargin(lifetimeSeconds: number): number {
  return Math.min(60, Math.max(2, lifetimeSeconds / 4));
}

/** The enrollment URL Authentik accepts: `next` must be relative (path and query only). */
export function enrollmentUrl(authentikUrl: string, slug: string, authorizeUrl: string): string {
  const authorize = new URL(authorizeUrl);
  const next = `${authorize.pathname}${authorize.search}`;
  return `${authentikUrl.replace(/\/+$/, '')}/if/flow/${encodeURIComponent(slug)}/?next=${encodeURIComponent(next)}`;
}

function toSession(user: OidcUser): Session {
  const p = user.profile;
  const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);
  return {
    accessToken: user.access_token,
    expiresAt: user.expires_at ?? 0,
    sub: p.sub,
    name: text(p.name),
    username: text(p.preferred_username),
    email: text(p.email),
  };
}

export class Auth implements TokenSource {
  private readonly manager: UserManager;
  private readonly settings: UserManagerSettings;
  private user: OidcUser | null = null;
  private renewing: Promise<string> | null = null;
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly listeners = new Set<(session: Session | null) => void>();
  /** Renewals done (for the page's diagnostics and the end-to-end test). */
  renewals = 0;

  constructor(
    private readonly config: AppConfig,
    private readonly origin: string = window.location.origin,
  ) {
    this.settings = {
      authority: config.issuer,
      client_id: config.clientId,
      redirect_uri: `${origin}/`,
      post_logout_redirect_uri: `${origin}/`,
      response_type: 'code',
      scope: config.scope,
      // Renewal is scheduled here (renewMargin), with the refresh token.
      automaticSilentRenew: false,
      monitorSession: false,
      loadUserInfo: false,
      revokeTokenTypes: ['refresh_token'],
      // RFC 7009 answers 200 with an empty body, whatever its content type says.
      revokeTokenAdditionalContentTypes: ['text/plain', 'text/html'],
    };
    this.manager = new UserManager(this.settings);
  }

  get session(): Session | null {
    return this.user ? toSession(this.user) : null;
  }

  subscribe(listener: (session: Session | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private publish(): void {
    const session = this.user ? toSession(this.user) : null;
    for (const l of this.listeners) l(session);
  }

  /**
   * Completes a sign-in when the page is the redirect target (`?code=`/`?error=`), else
   * restores the stored session. Resolves to the route to show after a sign-in, if any.
   */
  async init(): Promise<{ returnTo: string | null; error: string | null }> {
    const url = new URL(window.location.href);
    const params = url.searchParams;
    if (params.has('state') && (params.has('code') || params.has('error'))) {
      // Remove the code from the address bar and history whatever happens.
      window.history.replaceState(null, '', `${url.pathname}${url.hash}`);
      try {
        const user = await this.manager.signinRedirectCallback(url.href);
        this.setUser(user);
        const state = user.state as RoundTripState | undefined;
        return { returnTo: typeof state?.returnTo === 'string' ? state.returnTo : null, error: null };
      } catch (err) {
        const message = err instanceof ErrorResponse ? `${err.error ?? 'error'}: ${err.error_description ?? err.message}` : String(err);
        return { returnTo: null, error: `Sign-in failed (${message})` };
      }
    }
    const stored = await this.manager.getUser();
    if (stored) {
      this.user = stored;
      if (stored.expired || (stored.expires_in ?? 0) < 5) {
        try {
          await this.renew();
        } catch {
          // renew() has signed out when the session is gone
        }
      } else {
        this.schedule();
      }
    }
    return { returnTo: null, error: null };
  }

  private setUser(user: OidcUser | null): void {
    this.user = user;
    this.schedule();
    this.publish();
  }

  private schedule(): void {
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    const user = this.user;
    if (!user?.expires_at) return;
    // What is left of the token: its whole life when it was just issued.
    const remaining = user.expires_at - Date.now() / 1000;
    const delay = Math.max(0, (remaining - renewMargin(remaining)) * 1000);
    this.renewTimer = setTimeout(() => {
      this.renew().catch(() => {
        // Retried by callers that need a token; a lost session was published as signed out.
      });
    }, delay);
  }

  /** Starts the sign-in round trip; comes back to `returnTo` (a route such as "#/events"). */
  async signIn(returnTo: string): Promise<void> {
    await this.manager.signinRedirect({ state: { returnTo } satisfies RoundTripState });
  }

  /**
   * The sign-up link: the authorize request is built (and its PKCE verifier and state
   * stored) first, then the browser goes to Authentik's enrollment flow with the
   * request's path and query as `next`, and comes back signed in.
   */
  async signUpUrl(returnTo: string): Promise<string | null> {
    const slug = this.config.enrollmentFlowSlug;
    if (!slug) return null;
    const client = new OidcClient(this.settings);
    const request = await client.createSigninRequest({ state: { returnTo } satisfies RoundTripState, request_type: 'si:r' });
    return enrollmentUrl(this.config.authentikUrl, slug, request.url);
  }

  /** Ends the session here and at the provider (end_session_endpoint). */
  async signOut(): Promise<void> {
    const user = this.user;
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.user = null;
    this.publish();
    try {
      // Best effort: a refresh token that cannot be used again even if it leaked.
      await this.manager.revokeTokens(['refresh_token']);
    } catch (err) {
      console.warn('could not revoke the refresh token:', err);
    }
    try {
      await this.manager.signoutRedirect(user?.id_token ? { id_token_hint: user.id_token } : {});
    } catch (err) {
      // The provider is unreachable: the local session is gone anyway.
      console.warn('sign-out at the provider failed; signed out here only:', err);
      await this.manager.removeUser();
      window.location.assign(`${this.origin}/`);
    }
  }

  async token(): Promise<string> {
    const user = this.user;
    if (!user) throw new SignedOutError();
    if ((user.expires_at ?? 0) - Date.now() / 1000 > 5) return user.access_token;
    return this.renew();
  }

  /** Renews with the refresh token; concurrent callers share one request. */
  renew(): Promise<string> {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      try {
        if (!this.user?.refresh_token) throw new SignedOutError('no refresh token: sign in again');
        const user = await this.manager.signinSilent();
        if (!user) throw new SignedOutError();
        this.renewals++;
        if (typeof performance !== 'undefined') performance.mark('idsync:token-renewed');
        this.setUser(user);
        return user.access_token;
      } catch (err) {
        // The provider refused the refresh token (revoked, expired, session ended): the
        // session is over. Network trouble is not: the caller retries.
        if (err instanceof SignedOutError || (err instanceof ErrorResponse && err.error === 'invalid_grant')) {
          await this.manager.removeUser();
          this.setUser(null);
          throw err instanceof SignedOutError ? err : new SignedOutError('the session ended: sign in again');
        }
        throw err;
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }
}
