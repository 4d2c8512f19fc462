// Who is logged in: restored on load from the refresh cookie (a reload
// keeps the session without the token ever reaching JavaScript), ended by a
// logout or a refused refresh.

import { createContext, useCallback, useContext, useEffect, useMemo, useState } from 'react';
import type { ReactNode } from 'react';
import * as api from '../api/client';
import type { Schemas } from '../api/client';

export type Me = Schemas['Me'];
export type Permission = Schemas['Permission'];

interface Session {
  /** False until the first restore attempt has finished. */
  ready: boolean;
  me: Me | null;
  login: (email: string, password: string) => Promise<void>;
  /** After signup or an accepted invitation (tokens already kept). */
  adopt: () => Promise<void>;
  logout: () => Promise<void>;
  /** Whether the role holds a permission: the same table the API
   * enforces (GET /me lists it), so a page shows only what will work. */
  may: (p: Permission) => boolean;
  /** Shorthand for may('manage_tenant'): read-only roles see no edit
   * controls. */
  canEdit: boolean;
  isMsp: boolean;
}

const Context = createContext<Session | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [ready, setReady] = useState(false);
  const [me, setMe] = useState<Me | null>(null);

  const loadMe = useCallback(async () => {
    setMe(await api.call<Me>('GET', '/api/v1/me', { tenant: false }));
  }, []);

  useEffect(() => {
    let live = true;
    (async () => {
      try {
        if (await api.refresh()) await loadMe();
      } catch {
        setMe(null);
      } finally {
        if (live) setReady(true);
      }
    })();
    const off = api.onSessionEnd(() => setMe(null));
    return () => {
      live = false;
      off();
    };
  }, [loadMe]);

  const value = useMemo<Session>(
    () => ({
      ready,
      me,
      login: async (email, password) => {
        await api.authenticate('/api/v1/auth/login', { email, password });
        await loadMe();
      },
      adopt: loadMe,
      logout: async () => {
        await api.logout();
        setMe(null);
      },
      may: (p) => me !== null && me.permissions.includes(p),
      canEdit: me !== null && me.permissions.includes('manage_tenant'),
      isMsp: me !== null && (me.role === 'msp_admin' || me.role === 'msp_technician'),
    }),
    [ready, me, loadMe],
  );
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

export function useSession(): Session {
  const s = useContext(Context);
  if (!s) throw new Error('useSession outside SessionProvider');
  return s;
}
