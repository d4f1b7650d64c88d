import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_SCOPE, loadConfig, parseConfig, wsUrl } from './config';

const valid = {
  issuer: 'http://localhost:9000/application/o/idsync/',
  clientId: 'idsync-frontend',
  apiBaseUrl: 'http://localhost:8080/',
  enrollmentFlowSlug: 'idsync-enrollment',
};

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('parseConfig', () => {
  it('reads the documented shape and fills the defaults', () => {
    expect(parseConfig(valid)).toEqual({
      issuer: 'http://localhost:9000/application/o/idsync/',
      clientId: 'idsync-frontend',
      apiBaseUrl: 'http://localhost:8080',
      enrollmentFlowSlug: 'idsync-enrollment',
      authentikUrl: 'http://localhost:9000',
      gatewayWsUrl: null,
      scope: DEFAULT_SCOPE,
    });
  });

  it('keeps the issuer exactly as written (the trailing slash is part of iss)', () => {
    expect(parseConfig(valid).issuer.endsWith('/')).toBe(true);
    expect(parseConfig({ ...valid, issuer: 'http://127.0.0.1:9101' }).issuer).toBe('http://127.0.0.1:9101');
  });

  it('accepts the optional settings', () => {
    const c = parseConfig({ ...valid, authentikUrl: 'https://auth.example.org/', gatewayWsUrl: 'wss://gw.example.org/ws', scope: 'openid offline_access' });
    expect(c.authentikUrl).toBe('https://auth.example.org');
    expect(c.gatewayWsUrl).toBe('wss://gw.example.org/ws');
    expect(c.scope).toBe('openid offline_access');
  });

  it('takes an empty apiBaseUrl as this origin, and no enrollment slug as no sign-up link', () => {
    const c = parseConfig({ issuer: valid.issuer, clientId: 'x', apiBaseUrl: '', enrollmentFlowSlug: '' });
    expect(c.apiBaseUrl).toBe('');
    expect(c.enrollmentFlowSlug).toBeNull();
  });

  it('names every problem at once', () => {
    expect(problems({ issuer: 'not a url', clientId: '', apiBaseUrl: 'ftp://x', enrollmentFlowSlug: '../evil', gatewayWsUrl: 'http://x/ws', colour: 'red' })).toEqual([
      'issuer must be an absolute http(s) URL without query or fragment',
      'clientId must not be empty',
      'apiBaseUrl must be an absolute http(s) URL, or "" for this origin',
      'enrollmentFlowSlug must be a slug (letters, digits, "-", "_")',
      'gatewayWsUrl must be an absolute ws(s) URL',
      'unknown setting "colour"',
    ]);
  });

  it('refuses non-objects, wrong types and missing required settings', () => {
    expect(problems(null)).toEqual(['expected a JSON object']);
    expect(problems([valid])).toEqual(['expected a JSON object']);
    expect(problems({})).toEqual(['issuer is required', 'clientId is required']);
    expect(problems({ ...valid, clientId: 42 })).toEqual(['clientId must be a string']);
    expect(problems({ ...valid, scope: 'email profile' })).toEqual(['scope must include openid']);
    expect(problems({ ...valid, issuer: 'javascript:alert(1)' })).toHaveLength(1);
    expect(problems({ ...valid, issuer: 'http://user:pw@idp/' })).toHaveLength(1);
  });
});

describe('wsUrl', () => {
  it('is the gateway URL when configured, else idsync /ws with a ws scheme', () => {
    expect(wsUrl(parseConfig({ ...valid, gatewayWsUrl: 'ws://localhost:9080/ws' }), 'http://localhost:3000')).toBe('ws://localhost:9080/ws');
    expect(wsUrl(parseConfig(valid), 'http://localhost:3000')).toBe('ws://localhost:8080/ws');
    expect(wsUrl(parseConfig({ ...valid, apiBaseUrl: 'https://api.example.org/idsync/' }), 'x')).toBe('wss://api.example.org/idsync/ws');
    expect(wsUrl(parseConfig({ ...valid, apiBaseUrl: '' }), 'https://app.example.org')).toBe('wss://app.example.org/ws');
  });
});

describe('loadConfig', () => {
  const fetchOf = (status: number, body: string) => (async () => new Response(body, { status })) as unknown as typeof fetch;

  it('fetches /config.json and parses it', async () => {
    await expect(loadConfig(fetchOf(200, JSON.stringify(valid)))).resolves.toMatchObject({ clientId: 'idsync-frontend' });
  });

  it('explains a missing or broken file', async () => {
    await expect(loadConfig(fetchOf(404, 'nope'))).rejects.toMatchObject({ problems: ['GET /config.json answered 404'] });
    await expect(loadConfig(fetchOf(200, '{not json'))).rejects.toMatchObject({ problems: ['/config.json is not valid JSON'] });
  });
});
