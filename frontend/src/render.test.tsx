// @vitest-environment happy-dom
// Server strings (usernames, emails, group names, WebSocket frames) are attacker-
// controlled: anyone can sign up with a name like the ones below. They must show up as
// the text they are, never as markup.
import { render } from 'preact';
import { afterEach, describe, expect, it } from 'vitest';
import { describeEvent, eventUser } from './format';
import { EventsTable } from './pages/events';
import { UserCard } from './pages/profile';
import type { FeedItem, User } from './types';
import { greeting } from './ws';

const HOSTILE = [
  '<img src=x onerror="window.__pwned=1">',
  '"><script>window.__pwned=1</script>',
  "javascript:window.__pwned=1",
  '<svg/onload=window.__pwned=1>',
  '{{constructor.constructor("window.__pwned=1")()}}',
  '\u202eevil\u202c <b>bold</b> &amp; &lt;',
];

const user = (s: string): User => ({
  pk: 66,
  uuid: '00000000-0000-0000-0000-000000000066',
  username: s,
  email: s,
  name: s,
  is_active: true,
  type: s,
  groups: [s, 'authentik Admins'],
  registered_at: s,
  updated_at: '2026-01-01T00:00:00Z',
  deleted_at: null,
});

const event = (position: number, s: string): FeedItem => ({
  position,
  type: position % 2 ? 'UserRegistered' : s,
  user_pk: 66,
  sequence: 1,
  recorded_at: s,
  data: { username: s, name: s, email: s, groups: [s] },
  metadata: { source: s },
});

function mount(node: preact.ComponentChild): HTMLElement {
  const root = document.createElement('div');
  document.body.appendChild(root);
  render(node, root);
  return root;
}

function expectInert(root: HTMLElement) {
  expect(root.querySelector('img, script, svg, b, iframe, object')).toBeNull();
  for (const el of root.querySelectorAll('*')) {
    for (const attr of el.getAttributeNames()) expect(attr.startsWith('on')).toBe(false);
  }
  for (const a of root.querySelectorAll('a')) expect(a.getAttribute('href') ?? '').toMatch(/^#\//);
  expect((window as unknown as { __pwned?: number }).__pwned).toBeUndefined();
}

afterEach(() => {
  document.body.innerHTML = '';
});

describe('hostile strings render as text', () => {
  for (const s of HOSTILE) {
    it(`profile card: ${JSON.stringify(s)}`, () => {
      const root = mount(<UserCard user={user(s)} />);
      expectInert(root);
      expect(root.querySelector('[data-testid="user-username"]')?.textContent).toBe(s);
      expect(root.querySelector('[data-testid="user-name"]')?.textContent).toBe(s);
      expect(root.querySelector('.chips li')?.textContent).toBe(s);
    });

    it(`live events table: ${JSON.stringify(s)}`, () => {
      const rows = [event(1, s), event(2, s)];
      const root = mount(<EventsTable rows={rows} version={1} />);
      expectInert(root);
      const text = root.textContent ?? '';
      expect(text).toContain(eventUser(rows[0] as FeedItem));
      expect(text).toContain(describeEvent(rows[1] as FeedItem));
    });

    it(`WebSocket greeting: ${JSON.stringify(s)}`, () => {
      const hello = greeting({ type: 'hello', authenticated: true, user: { preferred_username: s } });
      expect(hello).toBe(`Hello, ${s}`);
      const root = mount(<p>{hello}</p>);
      expectInert(root);
      expect(root.textContent).toBe(`Hello, ${s}`);
    });
  }

  it('an anonymous or odd hello says Anonymous, other frames are not greetings', () => {
    expect(greeting({ type: 'hello', authenticated: false, via: 'anonymous', user: null })).toBe('Anonymous');
    expect(greeting({ type: 'hello', authenticated: true, user: null })).toBe('Anonymous');
    expect(greeting({ type: 'hello', authenticated: true, user: { preferred_username: 42, email: 'e@x' } })).toBe('Hello, e@x');
    expect(greeting({ type: 'pong' })).toBeNull();
    expect(greeting('hello')).toBeNull();
  });
});

// After `DELETE /api/users/{pk}/personal-data` (or erase-on-delete) the API answers the
// user with null username, email and name and `"erased": true`; the pages must say so
// rather than crash on a null.
describe('an erased user', () => {
  const erased: User = {
    ...user('x'),
    username: null,
    email: null,
    name: null,
    groups: [],
    registered_at: '2026-01-01T00:00:00Z',
    deleted_at: '2026-02-01T00:00:00Z',
    is_active: false,
    erased: true,
  };

  it('profile card says the personal data is erased', () => {
    const root = mount(<UserCard user={erased} />);
    expect(root.querySelector('[data-testid="user-name"]')?.textContent).toBe('Erased user #66');
    expect(root.querySelector('[data-testid="user-username"]')?.textContent).toBe('erased');
    expect(root.querySelector('[data-testid="user-erased"]')?.textContent).toBe('Personal data erased');
    expect(root.textContent).toContain('Deleted');
  });

  it('its UserErased event reads as such', () => {
    const item: FeedItem = { ...event(3, 'x'), type: 'UserErased', data: { pk: 66 } };
    expect(describeEvent(item)).toBe('personal data erased');
    expect(eventUser(item)).toBe('#66');
  });
});
