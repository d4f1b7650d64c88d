// Shapes of idsync's API (its /openapi.json): the user read model and feed items.

export interface User {
  pk: number;
  uuid: string;
  username: string;
  email: string;
  name: string;
  is_active: boolean;
  type: string;
  groups: string[];
  registered_at: string;
  updated_at: string;
  deleted_at: string | null;
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
