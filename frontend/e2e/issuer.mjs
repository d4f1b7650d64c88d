// A real, certified OpenID Connect provider (npm `oidc-provider`) standing in for
// Authentik in the end-to-end test and for local development.
//
// What it shares with Authentik's provider "idsync" (NOTES: public client
// `idsync-frontend`, sub = the user's pk):
//   - authorization code + PKCE, refresh tokens for `offline_access`;
//   - JWT access tokens (RFC 9068, header `typ: at+jwt`) carrying `sub` (the pk as a
//     string), `scope`, `groups`, `preferred_username`, `email`, `name`;
//   - an `end_session_endpoint` for sign-out;
//   - a sign-up page at `/if/flow/<slug>/?next=<relative URL>` that, like Authentik's
//     enrollment flow, creates the account, logs it in and continues to `next`.
// Differences: JWT access tokens need a resource indicator in oidc-provider; the
// provider uses `defaultResource` so the app does not have to send one. The access
// token's `aud` is that resource (give it to idsync as IDSYNC_OIDC_AUDIENCE).
//
// The RS256 signing key is kept in a file, so a restarted provider signs with the same
// key (idsync's cached JWKS stays valid).
//
// Run alone:  node e2e/issuer.mjs [--port 9000] [--frontend http://localhost:3000]
//                                 [--access-token-ttl 300] [--key-file .issuer-key.json]
//                                 [--stub-url http://127.0.0.1:9000] [--dev-tokens]
// `--stub-url` tells the Authentik stand-in about people who sign up (as Authentik would
// know them); `--dev-tokens` adds `POST /dev/token` (`{"sub": "7", "ttl": 3600}`, from
// loopback only) minting an access token of the same shape as the provider's own, for
// curl: `scripts/demo` prints two.

import { createPrivateKey, createSign, generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

// oidc-provider warns once, on import, that Node 22 is its supported runtime; it works on
// Node 20 (the project's), so that warning is noise here.
const originalWarn = console.warn;
console.warn = () => {};
const { default: Provider } = await import('oidc-provider');
console.warn = originalWarn;

export const ADMIN_GROUP = 'authentik Admins';
export const RESOURCE = 'urn:idsync:api';
export const CLIENT_ID = 'idsync-frontend';
export const ENROLLMENT_SLUG = 'idsync-enrollment';

/**
 * Accounts by pk (a string: `sub`), for running alone: the same people as
 * `idsync-dev authentik-stub --sample-users` (passwords are for this test provider only).
 */
export function defaultAccounts() {
  return new Map([
    ['1', { pk: 1, username: 'akadmin', name: 'authentik Default Admin', email: 'admin@example.org', password: 'akadmin', groups: [ADMIN_GROUP] }],
    ['7', { pk: 7, username: 'jane', name: 'Jane Doe', email: 'jane@example.org', password: 'jane', groups: ['staff'] }],
    ['8', { pk: 8, username: 'john', name: 'John Roe', email: 'john@example.org', password: 'john', groups: [] }],
  ]);
}

function loadOrCreateKey(file) {
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `idsync-e2e-${randomUUID().slice(0, 8)}`, alg: 'RS256', use: 'sig' };
  if (file) writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * Starts the provider. Returns { issuer, port, accounts, close() }.
 * @param {object} o
 * @param {number} [o.port] 0 = any free port
 * @param {string} o.frontendOrigin e.g. http://localhost:3000 (redirect URI = origin + "/")
 * @param {number} [o.accessTokenTTL] seconds
 * @param {string} [o.keyFile] where the signing key is kept
 * @param {(account: object) => Promise<void>|void} [o.onEnroll] called when someone signs up
 * @param {Map<string, object>} [o.accounts]
 * @param {number} [o.firstNewPk] the pk the first signed-up account gets
 */
export async function startIssuer({ port = 0, host = '127.0.0.1', frontendOrigin, accessTokenTTL = 300, keyFile, onEnroll, accounts = defaultAccounts(), firstNewPk = 1000, devTokens = false }) {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(port, host, resolve));
  const actualPort = server.address().port;
  const issuer = `http://${host}:${actualPort}`;
  const jwk = loadOrCreateKey(keyFile);
  const redirect = `${frontendOrigin.replace(/\/$/, '')}/`;
  // The account that just signed up, by a cookie the sign-up page sets: the next login
  // interaction takes it without asking for a password (as Authentik's enrollment flow
  // ends with a user_login stage).
  const enrolled = new Map();

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        application_type: 'web',
        redirect_uris: [redirect],
        post_logout_redirect_uris: [redirect],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    jwks: { keys: [jwk] },
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'offline_access'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    ttl: {
      AccessToken: accessTokenTTL,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
      Interaction: 600,
      AuthorizationCode: 60,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true, allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: (ctx, form) => {
          ctx.body = page('Sign out', `${form}<p>Sign out of the test provider?</p><button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>`);
        },
        postLogoutSuccessSource: (ctx) => {
          ctx.body = page('Signed out', '<p>You are signed out.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== RESOURCE) throw new Error(`unknown resource ${indicator}`);
          return {
            scope: 'openid email profile offline_access',
            audience: RESOURCE,
            accessTokenTTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // OIDC Core drops offline_access unless prompt=consent; Authentik issues a refresh
    // token for offline_access without it, and so does this stand-in.
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    // The app calls the token, revocation and discovery endpoints from its own origin.
    clientBasedCORS: (_ctx, origin) => origin === frontendOrigin.replace(/\/$/, ''),
    extraTokenClaims: async (_ctx, token) => {
      const account = accounts.get(token.accountId);
      if (!account) return undefined;
      return { groups: account.groups, preferred_username: account.username, email: account.email, name: account.name };
    },
    findAccount: (_ctx, id) => {
      const account = accounts.get(id);
      if (!account) return undefined;
      return {
        accountId: id,
        claims: () => ({ sub: id, email: account.email, email_verified: true, name: account.name, preferred_username: account.username, groups: account.groups }),
      };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['idsync-e2e-cookie-key'] },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre>`);
    },
  });
  provider.proxy = false;
  const callback = provider.callback();

  async function finishConsent(req, res, details) {
    const { prompt, params, session, grantId } = details;
    const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(indicator, scopes.join(' '));
    const id = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
  }

  function loginForm(uid, error) {
    return page(
      'Sign in to the test provider',
      `${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<p><label for="username">Username</label> <input id="username" name="username" required autofocus></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" required></p>
<p><button type="submit">Sign in</button></p></form>`,
    );
  }

  function enrollForm(next, error) {
    return page(
      'Create your account',
      `${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" autocomplete="off"><input type="hidden" name="next" value="${escapeHtml(next)}">
<p><label for="username">Username</label> <input id="username" name="username" required></p>
<p><label for="name">Name</label> <input id="name" name="name" required></p>
<p><label for="email">Email</label> <input id="email" name="email" type="email" required></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" required></p>
<p><button type="submit">Create account</button></p></form>`,
    );
  }

  const html = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers });
    res.end(body);
  };

  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (devTokens && url.pathname === '/dev/token' && req.method === 'POST') {
        return await devToken(req, res);
      }
      const interaction = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
      const enroll = url.pathname.match(/^\/if\/flow\/([^/]+)\/$/);
      if (interaction) {
        const details = await provider.interactionDetails(req, res);
        if (details.prompt.name === 'consent') return await finishConsent(req, res, details);
        if (interaction[2] && req.method === 'POST') {
          const form = await readForm(req);
          const account = [...accounts.values()].find((a) => a.username === form.get('username'));
          if (!account || account.password !== form.get('password')) {
            return html(res, 200, loginForm(details.uid, 'Wrong username or password.'));
          }
          return await provider.interactionFinished(req, res, { login: { accountId: String(account.pk) } }, { mergeWithLastSubmission: false });
        }
        const cookie = (req.headers.cookie ?? '').match(/(?:^|;\s*)e2e_enrolled=([^;]+)/);
        const justEnrolled = cookie && enrolled.get(cookie[1]);
        if (justEnrolled) {
          enrolled.delete(cookie[1]);
          res.setHeader('set-cookie', 'e2e_enrolled=; Path=/; Max-Age=0');
          return await provider.interactionFinished(req, res, { login: { accountId: justEnrolled } }, { mergeWithLastSubmission: false });
        }
        return html(res, 200, loginForm(details.uid));
      }
      if (enroll) {
        if (enroll[1] !== ENROLLMENT_SLUG) return html(res, 404, page('Not found', '<p>No such flow.</p>'));
        const next = req.method === 'POST' ? null : url.searchParams.get('next') ?? '/';
        if (req.method !== 'POST') return html(res, 200, enrollForm(next));
        const form = await readForm(req);
        const target = form.get('next') ?? '/';
        // Authentik accepts only a relative `next`.
        if (!target.startsWith('/') || target.startsWith('//')) return html(res, 400, page('Bad request', '<p>next must be a relative URL.</p>'));
        const username = form.get('username') ?? '';
        if ([...accounts.values()].some((a) => a.username === username)) return html(res, 200, enrollForm(target, 'That username is taken.'));
        const pk = Math.max(firstNewPk - 1, ...[...accounts.values()].map((a) => a.pk)) + 1;
        const account = { pk, username, name: form.get('name') ?? '', email: form.get('email') ?? '', password: form.get('password') ?? '', groups: [] };
        accounts.set(String(pk), account);
        if (onEnroll) await onEnroll(account);
        const token = randomUUID();
        enrolled.set(token, String(pk));
        res.writeHead(302, { location: target, 'set-cookie': `e2e_enrolled=${token}; Path=/; HttpOnly; SameSite=Lax` });
        return res.end();
      }
      return callback(req, res);
    } catch (err) {
      console.error('issuer:', err);
      if (!res.headersSent) html(res, 500, page('Error', `<pre>${escapeHtml(err.message)}</pre>`));
    }
  });

  // An access token like the provider's own JWT access tokens (RFC 9068: typ at+jwt,
  // aud the resource, scope, the account's claims), signed with the provider's key; for
  // trying the API with curl without a browser. Loopback callers only.
  async function devToken(req, res) {
    const remote = req.socket.remoteAddress ?? '';
    if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(remote)) {
      res.writeHead(403);
      return res.end();
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: 'not JSON' }));
    }
    const account = accounts.get(String(body.sub));
    if (!account) {
      res.writeHead(404, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: `no account ${body.sub}` }));
    }
    const now = Math.floor(Date.now() / 1000);
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const header = { alg: 'RS256', typ: 'at+jwt', kid: jwk.kid };
    const claims = {
      iss: issuer, sub: String(account.pk), aud: RESOURCE, iat: now, exp: now + Number(body.ttl ?? 3600),
      jti: randomUUID(), client_id: CLIENT_ID, scope: 'openid email profile offline_access',
      groups: account.groups, preferred_username: account.username, email: account.email, name: account.name,
    };
    const input = `${b64(header)}.${b64(claims)}`;
    const signature = createSign('RSA-SHA256').update(input).sign(createPrivateKey({ key: jwk, format: 'jwk' }), 'base64url');
    const payload = JSON.stringify({ access_token: `${input}.${signature}`, token_type: 'Bearer' });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    return res.end(payload);
  }

  return {
    issuer,
    port: actualPort,
    accounts,
    provider,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

// CLI
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const stubUrl = arg('stub-url', null);
  const started = await startIssuer({
    port: Number(arg('port', '9000')),
    frontendOrigin: arg('frontend', 'http://localhost:3000'),
    accessTokenTTL: Number(arg('access-token-ttl', '300')),
    keyFile: arg('key-file', '.issuer-key.json'),
    devTokens: process.argv.includes('--dev-tokens'),
    // A new account exists in "Authentik" too: the stand-in's control API.
    onEnroll: stubUrl
      ? async (account) => {
          await fetch(`${stubUrl}/_stub/users/${account.pk}`, {
            method: 'PUT',
            body: JSON.stringify({ username: account.username, name: account.name, email: account.email, groups: [] }),
          });
        }
      : undefined,
  });
  console.log(`OIDC provider ${started.issuer}: sign in as akadmin/akadmin (an admin, sub 1), jane/jane (sub 7) or john/john (sub 8)`);
  console.log(`idsync: IDSYNC_OIDC_ISSUER=${started.issuer} IDSYNC_OIDC_AUDIENCE=${RESOURCE}`);
}
