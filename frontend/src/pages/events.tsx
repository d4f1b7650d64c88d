import type { JSX } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { markRendered, useApp } from '../app';
import type { FeedState } from '../feed';
import { describeEvent, eventSource, eventUser, formatTime } from '../format';
import type { FeedItem } from '../types';

export const ROW_HEIGHT = 36;
/** Rows rendered above and below the visible ones. */
const OVERSCAN = 8;

const STATE_LABELS: Record<FeedState, string> = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  'token-expired': 'Token expired, renewing…',
  failed: 'Disconnected',
  stopped: 'Stopped',
};

export function StatusBadge({ state, detail }: { state: FeedState; detail: string | null }) {
  return (
    <span class={`status status-${state}`} role="status" data-testid="feed-state" data-state={state} title={detail ?? undefined}>
      <span class="dot" aria-hidden="true" />
      {STATE_LABELS[state]}
    </span>
  );
}

function useStore() {
  const { events } = useApp();
  const [, setVersion] = useState(events.version);
  useEffect(() => events.subscribe(() => setVersion(events.version)), [events]);
  return events;
}

export function EventsPage() {
  const { admin } = useApp();
  const events = useStore();
  useEffect(() => markRendered('events'), []);
  return (
    <section class="events-page">
      <div class="page-head">
        <h1>Live events</h1>
        <StatusBadge state={events.state} detail={events.detail} />
      </div>
      <p class="muted">
        {admin ? 'You are an admin: every user’s events.' : 'Your own events.'} Newest first;{' '}
        <span data-testid="event-count">{events.rows.length.toLocaleString()}</span> events
        {events.dropped > 0 ? ` (the ${events.dropped.toLocaleString()} oldest no longer kept)` : ''}.
      </p>
      {events.state === 'failed' && events.detail ? (
        <p class="notice error" role="alert">
          The live feed stopped: {events.detail}
        </p>
      ) : null}
      <EventsTable rows={events.rows} version={events.version} usernames={events.usernames} />
    </section>
  );
}

/**
 * A windowed table: only the rows in view (plus a few) are in the DOM, so 10,000 or
 * 100,000 rows scroll as smoothly as 10. Newest first; when rows arrive while the reader
 * is scrolled down, the view stays where it was and a button offers the new ones.
 */
export function EventsTable({ rows, version, usernames }: { rows: FeedItem[]; version: number; usernames?: ReadonlyMap<number, string> }) {
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewHeight, setViewHeight] = useState(600);
  const [unseen, setUnseen] = useState(0);
  const lastCount = useRef(rows.length);
  const lastNewest = useRef(rows.at(-1)?.position ?? 0);
  const frame = useRef(0);

  useLayoutEffect(() => {
    const el = scroller.current;
    const newest = rows.at(-1)?.position ?? 0;
    // Rows added on top since the last render (rows dropped at the bottom do not move the view).
    let added = 0;
    for (let i = rows.length - 1; i >= 0 && (rows[i]?.position ?? 0) > lastNewest.current; i--) added++;
    if (rows.length < lastCount.current && newest === 0) added = 0;
    lastCount.current = rows.length;
    lastNewest.current = newest;
    if (el && added > 0 && el.scrollTop > 0) {
      el.scrollTop += added * ROW_HEIGHT;
      setScrollTop(el.scrollTop);
      setUnseen((n) => n + added);
    }
  }, [version, rows]);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const resize = new ResizeObserver(() => setViewHeight(el.clientHeight));
    resize.observe(el);
    setViewHeight(el.clientHeight);
    return () => resize.disconnect();
  }, []);

  const onScroll = () => {
    if (frame.current) return;
    frame.current = requestAnimationFrame(() => {
      frame.current = 0;
      const top = scroller.current?.scrollTop ?? 0;
      setScrollTop(top);
      if (top === 0) setUnseen(0);
    });
  };

  const n = rows.length;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(n, Math.ceil((scrollTop + viewHeight) / ROW_HEIGHT) + OVERSCAN);
  const visible: JSX.Element[] = [];
  for (let i = first; i < last; i++) {
    const item = rows[n - 1 - i];
    if (!item) continue;
    visible.push(
      <div
        role="row"
        class="vt-row"
        key={item.position}
        aria-rowindex={i + 2}
        data-position={item.position}
        data-user={item.user_pk}
        style={{ transform: `translateY(${i * ROW_HEIGHT}px)` }}
      >
        <span role="cell" class="num">
          {item.position}
        </span>
        <span role="cell">{formatTime(item.recorded_at)}</span>
        <span role="cell">
          <span class={`type type-${item.type}`}>{item.type}</span>
        </span>
        <span role="cell">
          <a href={`#/users/${item.user_pk}`}>{eventUser(item, usernames)}</a>
        </span>
        <span role="cell" class="summary">
          {describeEvent(item)}
        </span>
        <span role="cell">{eventSource(item)}</span>
      </div>,
    );
  }

  return (
    <div class="vt-wrap">
      {unseen > 0 ? (
        <button
          type="button"
          class="new-rows"
          onClick={() => {
            scroller.current?.scrollTo({ top: 0 });
            setUnseen(0);
          }}
        >
          ↑ {unseen.toLocaleString()} new {unseen === 1 ? 'event' : 'events'}
        </button>
      ) : null}
      {n === 0 ? <p class="vt-empty">No events yet. They appear here as soon as idsync records them.</p> : null}
      <div class="vt" role="table" aria-label="Live events, newest first" aria-rowcount={n + 1} ref={scroller} onScroll={onScroll} tabIndex={0}>
        <div role="rowgroup" class="vt-head">
          <div role="row" class="vt-row" aria-rowindex={1}>
            <span role="columnheader">Position</span>
            <span role="columnheader">Recorded</span>
            <span role="columnheader">Event</span>
            <span role="columnheader">User</span>
            <span role="columnheader">What happened</span>
            <span role="columnheader">Source</span>
          </div>
        </div>
        <div role="rowgroup" class="vt-body" style={{ height: `${n * ROW_HEIGHT}px` }} data-testid="event-rows">
          {visible}
        </div>
      </div>
    </div>
  );
}
