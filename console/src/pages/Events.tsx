// The operation log: search by time range, device, group, user, kind and
// free text, newest first, loaded a page at a time on the keyset cursor
// as the list scrolls; CSV export with a progress count while it streams.

import { Alert, Button, Group, MultiSelect, Progress, Select, Stack, Text, TextInput, Title } from '@mantine/core';
import { keepPreviousData, useInfiniteQuery, useQuery } from '@tanstack/react-query';
import { useCallback, useRef, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, useTenantChosen } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { useDebounced } from '../components/useDebounced';
import { EventTable } from '../events/EventTable';
import { EVENT_KINDS } from '../events/kinds';

const PAGE = 200;

/** `YYYY-MM-DDTHH:MM` in local time, for datetime-local inputs. */
function localInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function iso(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

function useDevices(q: string) {
  return useQuery({
    queryKey: ['devices', 'pick', q],
    queryFn: () => api.call<Schemas['DevicePage']>('GET', '/api/v1/devices', { query: { q, limit: 50 } }),
  });
}

function Export({ query }: { query: Record<string, string | undefined> }) {
  const { t } = useTranslation();
  const [rows, setRows] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [link, setLink] = useState<{ href: string; name: string } | null>(null);
  const cancel = useRef<AbortController | null>(null);
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    setError(null);
    setLink(null);
    setRows(0);
    const abort = new AbortController();
    cancel.current = abort;
    try {
      const response = await api.download('/api/v1/events/export', query, abort.signal);
      const reader = response.body?.getReader();
      if (!reader) throw new Error('no body');
      const parts: Uint8Array[] = [];
      let lines = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        for (const b of value) if (b === 10) lines++;
        setRows(Math.max(0, lines - 1));
      }
      const blob = new Blob(parts as BlobPart[], { type: 'text/csv' });
      const name = `mamori-events-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '')}.csv`;
      const href = URL.createObjectURL(blob);
      setLink({ href, name });
      // Start the download at once; the link stays for a second try.
      const a = document.createElement('a');
      a.href = href;
      a.download = name;
      a.click();
    } catch (e) {
      if (!abort.signal.aborted) setError(e);
      setRows(null);
    } finally {
      cancel.current = null;
      setBusy(false);
    }
  };
  return (
    <Stack gap={4}>
      <Group>
        <Button variant="light" onClick={() => void run()} loading={busy} data-testid="export">
          {t('events.export')}
        </Button>
        {busy && (
          <Button variant="subtle" color="red" onClick={() => cancel.current?.abort()}>
            {t('app.cancel')}
          </Button>
        )}
        {rows !== null && (
          <Text size="sm" data-testid="export-progress">
            {link ? t('events.exported', { rows }) : t('events.exporting', { rows })}
          </Text>
        )}
        {link && (
          <a href={link.href} download={link.name} data-testid="export-link">
            {link.name}
          </a>
        )}
      </Group>
      {busy && <Progress value={100} animated striped size="xs" />}
      {error !== null && <Failure error={error} />}
    </Stack>
  );
}

export function Events() {
  const { t } = useTranslation();
  const { isMsp } = useSession();
  const chosen = useTenantChosen(isMsp);
  const [params, setParams] = useSearchParams();
  const [deviceSearch, setDeviceSearch] = useState('');
  const devices = useDevices(useDebounced(deviceSearch, 250));
  const groups = useGroups(chosen);
  const now = new Date();
  const from = params.get('from') ?? localInput(new Date(now.getTime() - 24 * 3600 * 1000));
  const to = params.get('to') ?? '';
  const text = params.get('q') ?? '';
  const user = params.get('user') ?? '';
  const kinds = (params.get('kind') ?? '').split(',').filter(Boolean);
  const device = params.get('device');
  const group = params.get('group');
  const q = useDebounced(text, 300);
  const userQ = useDebounced(user, 300);
  const set = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === '') next.delete(k);
      else next.set(k, v);
    }
    setParams(next, { replace: true });
  };
  const query: Record<string, string | undefined> = {
    from: iso(from),
    to: iso(to),
    q: q.trim() || undefined,
    user: userQ.trim() || undefined,
    kind: kinds.length ? kinds.join(',') : undefined,
    device: device ?? undefined,
    group: group ?? undefined,
  };
  const events = useInfiniteQuery({
    queryKey: ['events', query],
    enabled: chosen,
    initialPageParam: undefined as string | undefined,
    placeholderData: keepPreviousData,
    queryFn: ({ pageParam }) =>
      api.call<Schemas['EventPage']>('GET', '/api/v1/events', { query: { ...query, limit: PAGE, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const all = events.data?.pages.flatMap((p) => p.events) ?? [];
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = events;
  const loadMore = useCallback(() => void fetchNextPage(), [fetchNextPage]);
  const deviceOptions = (devices.data?.devices ?? []).map((d) => ({ value: d.id, label: d.hostname }));
  return (
    <Stack>
      <Title order={2}>{t('events.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <>
          <Group align="end" gap="sm">
            <TextInput type="datetime-local" label={t('events.from')} value={from} onChange={(e) => set({ from: e.currentTarget.value })} />
            <TextInput
              type="datetime-local"
              label={t('events.to')}
              value={to}
              placeholder={t('events.now')}
              onChange={(e) => set({ to: e.currentTarget.value })}
            />
            <TextInput
              label={t('events.search')}
              placeholder={t('events.searchHint')}
              value={text}
              maxLength={200}
              onChange={(e) => set({ q: e.currentTarget.value })}
              data-testid="event-search"
              w={240}
            />
          </Group>
          <Group align="end" gap="sm">
            <Select
              label={t('events.device')}
              placeholder={t('events.anyDevice')}
              searchable
              clearable
              searchValue={deviceSearch}
              onSearchChange={setDeviceSearch}
              filter={({ options }) => options}
              value={device}
              data={deviceOptions}
              onChange={(v) => set({ device: v })}
              w={220}
            />
            <Select
              label={t('events.group')}
              placeholder={t('events.anyGroup')}
              clearable
              value={group}
              data={groupOptions(groups.data)}
              onChange={(v) => set({ group: v })}
              w={220}
            />
            <TextInput label={t('events.user')} value={user} maxLength={200} onChange={(e) => set({ user: e.currentTarget.value })} w={160} />
            <MultiSelect
              label={t('events.kind')}
              placeholder={t('events.anyKind')}
              clearable
              searchable
              value={kinds}
              data={EVENT_KINDS.map((k) => ({ value: k, label: t(`kind.${k}`) }))}
              onChange={(v) => set({ kind: v.join(',') })}
              w={300}
            />
          </Group>
          <Export query={query} />
        </>
      )}
      {events.isError && <Failure error={events.error} retry={() => void events.refetch()} />}
      {events.isSuccess && all.length === 0 && <Alert color="gray">{t('events.none')}</Alert>}
      {all.length > 0 && (
        <>
          <Text size="sm" c="dimmed" data-testid="event-count">
            {t(hasNextPage ? 'events.loadedMore' : 'events.loaded', { count: all.length })}
          </Text>
          <EventTable events={all} hasMore={hasNextPage} loadingMore={isFetchingNextPage} loadMore={loadMore} />
        </>
      )}
    </Stack>
  );
}
