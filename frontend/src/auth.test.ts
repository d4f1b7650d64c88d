import { describe, expect, it } from 'vitest';
import { enrollmentUrl, renewMargin } from './auth';

describe('enrollmentUrl', () => {
  it('sends the authorize request as a relative next (Authentik refuses absolute ones)', () => {
    const authorize = 'http://localhost:9000/application/o/authorize/?client_id=idsync-frontend&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2F&response_type=code&scope=openid+offline_access&state=abc&code_challenge=xyz&code_challenge_method=S256';
    const url = new URL(enrollmentUrl('http://localhost:9000/', 'idsync-enrollment', authorize));
    expect(url.origin + url.pathname).toBe('http://localhost:9000/if/flow/idsync-enrollment/');
    const next = url.searchParams.get('next') ?? '';
    expect(next.startsWith('/application/o/authorize/?client_id=idsync-frontend&')).toBe(true);
    expect(next).toContain('code_challenge=xyz');
    expect(new URL(next, 'http://localhost:9000').href).toBe(authorize);
  });
});

describe('renewMargin', () => {
  it('renews a quarter of the lifetime ahead, between 2 s and 60 s', () => {
    expect(renewMargin(300)).toBe(60);
    expect(renewMargin(3600)).toBe(60);
    expect(renewMargin(20)).toBe(5);
    expect(renewMargin(4)).toBe(2);
  });
});
