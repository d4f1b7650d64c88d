// Shapes of idsync's API (its /openapi.json): the user read model and feed items.

export interface User {
  pk: number;
  uuid: string;
  /** null once the user's personal data is erased (`erased: true`) */
  username: string | null;
  email: string | null;
  name: string | null;
  is_active: boolean;
  type: string;
  groups: string[];
  registered_at: string;
  updated_at: string;
  deleted_at: string | null;
  /** The user's personal data was forgotten (right to erasure): username, email and name are null. */
  erased?: boolean;
}

/** What a page shows as a user's name: the name, else the username, else that it was erased. */
export function displayName(user: User): string {
  if (user.name) return user.name;
  if (user.username) return user.username;
  return user.erased ? `Erased user #${user.pk}` : `User #${user.pk}`;
}

/** One event of the log, as /api/events, /api/users/{pk}/events and the feeds carry it. */
export interface FeedItem {
  position: number;
  type: string;
  user_pk: number;
  sequence: number;
  recorded_at: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

export interface UsersPage {
  users: User[];
  next_after: number | null;
}

export interface EventsPage {
  events: FeedItem[];
  next_after: number | null;
}

export interface WhoAmI {
  sub: string;
  user_pk: number | null;
  admin: boolean;
  groups: string[];
  preferred_username: string | null;
  expires_at: number;
  via: string;
}

/** Authentik's user types, as the users filter offers them. */
export const USER_TYPES = ['internal', 'external', 'service_account', 'internal_service_account'] as const;
export type UserType = (typeof USER_TYPES)[number];

/** Narrows an unknown JSON value to a feed item (a server is trusted, but not blindly). */
export function asFeedItem(value: unknown): FeedItem | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.position !== 'number' || typeof v.type !== 'string' || typeof v.user_pk !== 'number') return null;
  return {
    position: v.position,
    type: v.type,
    user_pk: v.user_pk,
    sequence: typeof v.sequence === 'number' ? v.sequence : 0,
    recorded_at: typeof v.recorded_at === 'string' ? v.recorded_at : '',
    data: typeof v.data === 'object' && v.data !== null ? (v.data as Record<string, unknown>) : {},
    metadata: typeof v.metadata === 'object' && v.metadata !== null ? (v.metadata as Record<string, unknown>) : {},
  };
}
