// Plain-text renderings of API values. Everything here returns strings that the views
// put into text nodes (never HTML), so hostile values show up as the text they are.

import type { FeedItem } from './types';

// One formatter for the page: toLocaleString() with options builds a new one per call,
// which a table re-rendering dozens of rows per frame notices.
let dateTime: Intl.DateTimeFormat | null = null;

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  dateTime ??= new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  return dateTime.format(date);
}

export function formatValue(value: unknown): string {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (Array.isArray(value)) return value.length === 0 ? '(none)' : value.map(formatValue).join(', ');
  if (typeof value === 'number') return String(value);
  return JSON.stringify(value);
}

/** Human names of the user types Authentik knows. */
export function userTypeLabel(type: string): string {
  switch (type) {
    case 'internal':
      return 'Internal';
    case 'external':
      return 'External';
    case 'service_account':
      return 'Service account';
    case 'internal_service_account':
      return 'Internal service account (outpost)';
    default:
      return type;
  }
}

const FIELD_LABELS: Record<string, string> = {
  username: 'username',
  email: 'email',
  name: 'name',
  is_active: 'active',
  type: 'type',
  groups: 'groups',
  uuid: 'uuid',
};

/** The user an event is about, as well as the event itself tells. */
export function eventUser(item: FeedItem, known?: ReadonlyMap<number, string>): string {
  const username = item.data.username ?? known?.get(item.user_pk);
  return typeof username === 'string' && username !== '' ? `${username} (#${item.user_pk})` : `#${item.user_pk}`;
}

/** One line saying what happened. */
export function describeEvent(item: FeedItem): string {
  const d = item.data;
  switch (item.type) {
    case 'UserRegistered': {
      const parts = [d.name, d.email].filter((v): v is string => typeof v === 'string' && v !== '');
      return `registered${parts.length ? `: ${parts.join(', ')}` : ''}`;
    }
    case 'UserUpdated': {
      const changes = Object.entries(d)
        .filter(([k]) => k !== 'pk' && k !== 'registered_at' && k !== 'updated_at')
        .map(([k, v]) => `${FIELD_LABELS[k] ?? k} → ${formatValue(v)}`);
      return changes.length ? changes.join('; ') : 'updated';
    }
    case 'UserDeleted':
      return 'deleted';
    case 'UserErased':
      return 'personal data erased';
    default:
      return item.type;
  }
}

export function eventSource(item: FeedItem): string {
  const source = item.metadata.source;
  return typeof source === 'string' ? source : '—';
}
