// The runtime configuration, read from /config.json at start so that one build serves
// every deployment. Parsing is strict: a wrong setting is reported by name, in full,
// before anything else happens (a half-configured sign-in fails in confusing ways).

export interface AppConfig {
  /** The OIDC issuer, exactly as the provider spells it (Authentik's ends with "/"). */
  issuer: string;
  clientId: string;
  /** Where idsync answers, without a trailing slash; "" means this page's own origin. */
  apiBaseUrl: string;
  /** Authentik's enrollment flow for "Create an account"; null hides the link. */
  enrollmentFlowSlug: string | null;
  /** Authentik's base URL (for the enrollment flow); defaults to the issuer's origin. */
  authentikUrl: string;
  /** The gateway's WebSocket URL; null: idsync's own /ws under apiBaseUrl. */
  gatewayWsUrl: string | null;
  /** Requested scopes. */
  scope: string;
}

export const DEFAULT_SCOPE = 'openid email profile offline_access';

const KNOWN = new Set(['issuer', 'clientId', 'apiBaseUrl', 'enrollmentFlowSlug', 'authentikUrl', 'gatewayWsUrl', 'scope']);

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`config.json: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

function absoluteUrl(value: string, protocols: string[]): URL | null {
  try {
    const url = new URL(value);
    if (!protocols.includes(url.protocol)) return null;
    if (url.username || url.password || url.hash) return null;
    return url;
  } catch {
    return null;
  }
}

/** Parses config.json's JSON value; throws ConfigError naming every problem. */
export function parseConfig(raw: unknown): AppConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(['expected a JSON object']);
  }
  const input = raw as Record<string, unknown>;
  const problems: string[] = [];
  const str = (key: string, required: boolean): string | null => {
    const v = input[key];
    if (v === undefined || v === null) {
      if (required) problems.push(`${key} is required`);
      return null;
    }
    if (typeof v !== 'string') {
      problems.push(`${key} must be a string`);
      return null;
    }
    const t = v.trim();
    if (required && t === '') problems.push(`${key} must not be empty`);
    return t;
  };

  const issuer = str('issuer', true);
  let issuerUrl: URL | null = null;
  if (issuer) {
    issuerUrl = absoluteUrl(issuer, ['http:', 'https:']);
    if (!issuerUrl || issuerUrl.search) problems.push('issuer must be an absolute http(s) URL without query or fragment');
  }

  const clientId = str('clientId', true);

  let apiBaseUrl = str('apiBaseUrl', false) ?? '';
  if (apiBaseUrl !== '') {
    const url = absoluteUrl(apiBaseUrl, ['http:', 'https:']);
    if (!url || url.search) problems.push('apiBaseUrl must be an absolute http(s) URL, or "" for this origin');
    apiBaseUrl = apiBaseUrl.replace(/\/+$/, '');
  }

  let enrollmentFlowSlug = str('enrollmentFlowSlug', false);
  if (enrollmentFlowSlug === '') enrollmentFlowSlug = null;
  if (enrollmentFlowSlug !== null && !/^[A-Za-z0-9_-]+$/.test(enrollmentFlowSlug)) {
    problems.push('enrollmentFlowSlug must be a slug (letters, digits, "-", "_")');
  }

  let authentikUrl = str('authentikUrl', false) ?? '';
  if (authentikUrl !== '') {
    const url = absoluteUrl(authentikUrl, ['http:', 'https:']);
    if (!url || url.search) problems.push('authentikUrl must be an absolute http(s) URL');
    authentikUrl = authentikUrl.replace(/\/+$/, '');
  } else if (issuerUrl) {
    authentikUrl = issuerUrl.origin;
  }

  let gatewayWsUrl = str('gatewayWsUrl', false);
  if (gatewayWsUrl === '') gatewayWsUrl = null;
  if (gatewayWsUrl !== null && !absoluteUrl(gatewayWsUrl, ['ws:', 'wss:'])) {
    problems.push('gatewayWsUrl must be an absolute ws(s) URL');
  }

  const scope = str('scope', false) || DEFAULT_SCOPE;
  if (!scope.split(/\s+/).includes('openid')) problems.push('scope must include openid');

  for (const key of Object.keys(input)) {
    if (!KNOWN.has(key)) problems.push(`unknown setting ${JSON.stringify(key)}`);
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    issuer: issuer as string,
    clientId: clientId as string,
    apiBaseUrl,
    enrollmentFlowSlug,
    authentikUrl,
    gatewayWsUrl,
    scope,
  };
}

/** idsync's WebSocket URL: the gateway's when configured, else idsync's own `/ws`. */
export function wsUrl(config: AppConfig, origin: string): string {
  if (config.gatewayWsUrl) return config.gatewayWsUrl;
  const base = new URL(config.apiBaseUrl === '' ? origin : config.apiBaseUrl);
  const scheme = base.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${base.host}${base.pathname.replace(/\/+$/, '')}/ws`;
}

/** Fetches and parses /config.json (relative to the page, never cached). */
export async function loadConfig(fetchImpl: typeof fetch = fetch): Promise<AppConfig> {
  let response: Response;
  try {
    response = await fetchImpl('/config.json', { cache: 'no-store', headers: { accept: 'application/json' } });
  } catch (err) {
    throw new ConfigError([`could not fetch /config.json: ${String(err)}`]);
  }
  if (!response.ok) throw new ConfigError([`GET /config.json answered ${response.status}`]);
  let raw: unknown;
  try {
    raw = await response.json();
  } catch {
    throw new ConfigError(['/config.json is not valid JSON']);
  }
  return parseConfig(raw);
}
