import { useEffect, useState } from 'preact/hooks';
import { markRendered, useApp } from '../app';

/** Signed out: what idsync is, sign in, create an account. */
export function HomePage({ returnTo }: { returnTo: string }) {
  const { auth, config } = useApp();
  const [busy, setBusy] = useState<'in' | 'up' | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => markRendered('home'), []);

  const go = async (which: 'in' | 'up') => {
    setBusy(which);
    setError(null);
    try {
      if (which === 'in') {
        await auth.signIn(returnTo);
      } else {
        const url = await auth.signUpUrl(returnTo);
        if (url) window.location.assign(url);
      }
    } catch (err) {
      setBusy(null);
      setError(`Cannot reach the sign-in provider: ${err instanceof Error ? err.message : String(err)}`);
    }
  };

  return (
    <section class="home">
      <h1>Your identity, in sync</h1>
      <p class="lead">
        idsync follows every change Authentik makes to its users and keeps them as an event log. Sign in to see your
        profile as idsync knows it and watch your events arrive live.
      </p>
      <div class="actions">
        <button type="button" onClick={() => void go('in')} disabled={busy !== null}>
          {busy === 'in' ? 'Redirecting…' : 'Sign in'}
        </button>
        {config.enrollmentFlowSlug ? (
          <button type="button" class="secondary" onClick={() => void go('up')} disabled={busy !== null}>
            {busy === 'up' ? 'Redirecting…' : 'Create an account'}
          </button>
        ) : null}
      </div>
      {error ? (
        <p class="notice error" role="alert">
          {error}
        </p>
      ) : null}
      <p class="muted">
        Signing in happens at your organisation's identity provider; this page never sees your password.
      </p>
    </section>
  );
}
