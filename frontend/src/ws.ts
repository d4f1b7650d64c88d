// The gateway WebSocket's messages, read defensively: every field is untrusted text.

export interface WsLogEntry {
  id: number;
  direction: 'in' | 'out' | 'info';
  text: string;
  at: string;
}

/** "Hello, <preferred_username>" for an identified caller, "Anonymous" otherwise; null if not a hello. */
export function greeting(message: unknown): string | null {
  if (typeof message !== 'object' || message === null) return null;
  const m = message as Record<string, unknown>;
  if (m.type !== 'hello') return null;
  if (m.authenticated !== true || typeof m.user !== 'object' || m.user === null) return 'Anonymous';
  const user = m.user as Record<string, unknown>;
  for (const key of ['preferred_username', 'name', 'email', 'sub']) {
    const v = user[key];
    if (typeof v === 'string' && v !== '') return `Hello, ${v}`;
  }
  return 'Hello';
}
