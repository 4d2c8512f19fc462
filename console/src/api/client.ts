// The REST API, as the console uses it: the access token in memory only,
// the refresh token in an HttpOnly cookie the gateway sets for browser
// sessions (`X-Mamori-Session: cookie`), and the tenant an MSP user acts on
// in `X-Mamori-Tenant`. Types come from the OpenAPI document
// (`schema.d.ts`, generated; `npm run gen:api`).

import type { components } from './schema';

export type Schemas = components['schemas'];

/** An answer of the API that is not a success. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** The request field a refusal names (`new_password: must be …`), so a
   * form can show the message next to that field. */
  get field(): string | null {
    if (this.code !== 'invalid_input') return null;
    return /^([A-Za-z_][A-Za-z0-9_.[\]]*): /.exec(this.message)?.[1] ?? null;
  }

  /** The message without the field name in front. */
  get reason(): string {
    const field = this.field;
    return field ? this.message.slice(field.length + 2) : this.message;
  }
}

/** The session ended (refresh refused): the user must log in again. */
export class SessionExpired extends ApiError {
  constructor() {
    super(401, 'session_expired', 'session expired');
  }
}

interface Tokens {
  access: string;
  /** When to refresh (ms since the epoch), a minute before expiry. */
  refreshAt: number;
}

let tokens: Tokens | null = null;
let actingTenant: string | null = sessionStorage.getItem('mamori.tenant');
let refreshing: Promise<boolean> | null = null;
const listeners = new Set<() => void>();

/** Called when the session ends (refresh failed, logout). */
export function onSessionEnd(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

const tenantListeners = new Set<() => void>();

export function setActingTenant(tenant: string | null): void {
  actingTenant = tenant;
  if (tenant) sessionStorage.setItem('mamori.tenant', tenant);
  else sessionStorage.removeItem('mamori.tenant');
  for (const f of tenantListeners) f();
}

/** Called when the acting tenant changes (for `useSyncExternalStore`). */
export function onTenantChange(f: () => void): () => void {
  tenantListeners.add(f);
  return () => tenantListeners.delete(f);
}

export function getActingTenant(): string | null {
  return actingTenant;
}

export function hasSession(): boolean {
  return tokens !== null;
}

function remember(answer: Schemas['TokenResponse']): void {
  tokens = {
    access: answer.access_token,
    refreshAt: Date.now() + Math.max(10, answer.expires_in - 60) * 1000,
  };
}

async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as Schemas['ErrorBody'];
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, 'http_' + response.status, response.statusText);
  }
}

const SESSION_HEADERS = {
  'X-Mamori-Session': 'cookie',
  'Content-Type': 'application/json',
};

/** Logs in (or signs up, or accepts an invitation): the answer's tokens. */
export async function authenticate(path: string, body: unknown): Promise<unknown> {
  const response = await fetch(path, {
    method: 'POST',
    headers: SESSION_HEADERS,
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (!response.ok) throw await errorOf(response);
  const answer = (await response.json()) as Schemas['TokenResponse'];
  remember(answer);
  return answer;
}

/** Trades the cookie for a fresh access token; false when there is none. */
export async function refresh(): Promise<boolean> {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const response = await fetch('/api/v1/auth/refresh', {
          method: 'POST',
          headers: SESSION_HEADERS,
          body: '{}',
          credentials: 'same-origin',
        });
        if (!response.ok) {
          tokens = null;
          return false;
        }
        remember((await response.json()) as Schemas['TokenResponse']);
        return true;
      } catch {
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

export async function logout(): Promise<void> {
  try {
    await fetch('/api/v1/auth/logout', {
      method: 'POST',
      headers: SESSION_HEADERS,
      body: '{}',
      credentials: 'same-origin',
    });
  } finally {
    tokens = null;
    setActingTenant(null);
    listeners.forEach((f) => f());
  }
}

export interface Call {
  query?: Record<string, string | number | boolean | null | undefined>;
  body?: unknown;
  /** Send the acting tenant (default true for MSP users' tenant calls). */
  tenant?: boolean;
}

function url(path: string, query?: Call['query']): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/** One API call as the logged-in user; refreshes the token when needed. */
export async function call<T>(method: string, path: string, options: Call = {}): Promise<T> {
  if (tokens && Date.now() > tokens.refreshAt) await refresh();
  for (let attempt = 0; ; attempt++) {
    const headers: Record<string, string> = {};
    if (tokens) headers['Authorization'] = `Bearer ${tokens.access}`;
    if (actingTenant && options.tenant !== false) headers['X-Mamori-Tenant'] = actingTenant;
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url(path, options.query), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: 'same-origin',
    });
    if (response.status === 401 && attempt === 0 && (await refresh())) continue;
    if (response.status === 401) {
      tokens = null;
      listeners.forEach((f) => f());
      throw new SessionExpired();
    }
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }
}

/** A call that needs no session (signup, links from mails). */
export async function publicCall<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** A call that answers with a file (CSV export): its response, streaming. */
export async function download(path: string, query: Call['query'], signal?: AbortSignal): Promise<Response> {
  if (tokens && Date.now() > tokens.refreshAt) await refresh();
  const headers: Record<string, string> = {};
  if (tokens) headers['Authorization'] = `Bearer ${tokens.access}`;
  if (actingTenant) headers['X-Mamori-Tenant'] = actingTenant;
  const response = await fetch(url(path, query), { headers, credentials: 'same-origin', signal });
  if (!response.ok) throw await errorOf(response);
  return response;
}
