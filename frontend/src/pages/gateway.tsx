import { useEffect, useRef, useState } from 'preact/hooks';
import { markRendered, useApp } from '../app';
import { wsUrl } from '../config';
import { greeting, type WsLogEntry } from '../ws';

const MAX_LOG = 200;

type Conn = 'closed' | 'connecting' | 'open';

/**
 * The gateway's WebSocket, as the seed's test page had it, done safely: every string the
 * server sends is shown as text (Preact renders strings as text nodes, never HTML).
 */
export function GatewayPage() {
  const { config, api, session } = useApp();
  const url = wsUrl(config, window.location.origin);
  const socket = useRef<WebSocket | null>(null);
  const [conn, setConn] = useState<Conn>('closed');
  const [hello, setHello] = useState<string | null>(null);
  const [log, setLog] = useState<WsLogEntry[]>([]);
  const [echo, setEcho] = useState('Hello from the browser');
  const [after, setAfter] = useState('0');
  const [error, setError] = useState<string | null>(null);
  const seq = useRef(0);

  useEffect(() => {
    markRendered('ws');
    return () => socket.current?.close();
  }, []);

  const add = (direction: WsLogEntry['direction'], text: string) => {
    setLog((l) => [{ id: ++seq.current, direction, text, at: new Date().toLocaleTimeString() }, ...l.slice(0, MAX_LOG - 1)]);
  };

  const connect = async (signedIn: boolean) => {
    socket.current?.close();
    setError(null);
    setHello(null);
    setConn('connecting');
    let target = url;
    if (signedIn) {
      try {
        const { ticket } = await api.streamTicket();
        target = `${url}${url.includes('?') ? '&' : '?'}ticket=${encodeURIComponent(ticket)}`;
      } catch (err) {
        setConn('closed');
        setError(`Could not get a stream ticket: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
    }
    const ws = new WebSocket(target);
    socket.current = ws;
    ws.onopen = () => {
      if (socket.current === ws) setConn('open');
      add('info', signedIn ? 'connected with a stream ticket' : 'connected anonymously');
    };
    ws.onmessage = (m) => {
      const text = typeof m.data === 'string' ? m.data : '(binary frame)';
      add('in', text);
      try {
        const msg = JSON.parse(text) as unknown;
        const g = greeting(msg);
        if (g !== null) setHello(g);
      } catch {
        // shown in the log as received
      }
    };
    ws.onclose = (e) => {
      if (socket.current !== ws) return;
      setConn('closed');
      add('info', `closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`);
    };
    ws.onerror = () => {
      if (socket.current === ws) setError('The WebSocket failed (browsers give no detail; is the gateway or idsync up?)');
    };
  };

  const send = (value: unknown) => {
    const ws = socket.current;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const text = JSON.stringify(value);
    ws.send(text);
    add('out', text);
  };

  const open = conn === 'open';
  return (
    <section>
      <h1>Gateway WebSocket</h1>
      <p class="muted">
        Talks to <code>{url}</code>: anonymously, or signed in with a single-use stream ticket (never the token itself
        in the URL).
      </p>
      <div class="actions">
        <button type="button" onClick={() => void connect(false)} disabled={conn === 'connecting'}>
          Connect anonymously
        </button>
        <button type="button" onClick={() => void connect(true)} disabled={!session || conn === 'connecting'}>
          Connect signed in
        </button>
        <button type="button" class="secondary" onClick={() => socket.current?.close()} disabled={!open}>
          Disconnect
        </button>
      </div>
      {error ? (
        <p class="notice error" role="alert">
          {error}
        </p>
      ) : null}
      <p class="greeting" role="status" data-testid="ws-greeting">
        {conn === 'closed' && hello === null ? 'Not connected.' : hello === null ? 'Connecting…' : hello}
      </p>
      <div class="ws-controls">
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            send({ type: 'echo', data: echo });
          }}
        >
          <label for="ws-echo">Echo</label>
          <input id="ws-echo" value={echo} onInput={(e) => setEcho(e.currentTarget.value)} />
          <button type="submit" disabled={!open}>
            Send
          </button>
        </form>
        <button type="button" class="secondary" disabled={!open} onClick={() => send({ type: 'ping' })}>
          Ping
        </button>
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            const n = Number(after);
            send(after.trim() === '' ? { type: 'subscribe' } : { type: 'subscribe', after: Number.isSafeInteger(n) && n >= 0 ? n : 0 });
          }}
        >
          <label for="ws-after">Subscribe after position</label>
          <input id="ws-after" inputMode="numeric" value={after} onInput={(e) => setAfter(e.currentTarget.value)} size={8} />
          <button type="submit" disabled={!open}>
            Subscribe
          </button>
        </form>
      </div>
      <h2>Messages (newest first)</h2>
      <ol class="ws-log" data-testid="ws-log" aria-label="Messages, newest first" tabIndex={0}>
        {log.map((entry) => (
          <li key={entry.id} class={`ws-${entry.direction}`}>
            <span class="ws-dir">{entry.direction === 'in' ? '←' : entry.direction === 'out' ? '→' : '·'}</span>
            <time>{entry.at}</time>
            <code>{entry.text}</code>
          </li>
        ))}
      </ol>
    </section>
  );
}
