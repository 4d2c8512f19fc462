// The device list: searched, filtered by status, sorted and paged by the
// server, so that a fleet of thousands loads one page at a time. The
// filters live in the address, so a filtered view can be bookmarked.

import { Badge, Group, Pagination, SegmentedControl, Stack, Table, Text, TextInput, Title, UnstyledButton } from '@mantine/core';
import { keepPreviousData, useQuery } from '@tanstack/react-query';
import { useTranslation } from 'react-i18next';
import { Link, useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { useDebounced } from '../components/useDebounced';
import { dateTime } from '../format';

const STATUS_COLOR: Record<string, string> = {
  online: 'teal',
  offline: 'gray',
  not_reporting: 'orange',
  revoked: 'red',
};
const PAGE = 50;
type Sort = 'hostname' | 'last_seen' | 'status' | 'agent_version';
const SORTS: Sort[] = ['hostname', 'last_seen', 'status', 'agent_version'];
const STATUSES = ['all', 'online', 'offline', 'not_reporting', 'revoked'] as const;

export function Devices() {
  const { t } = useTranslation();
  const { isMsp } = useSession();
  const chosen = useTenantChosen(isMsp);
  const [params, setParams] = useSearchParams();
  const q = params.get('q') ?? '';
  const status = STATUSES.find((s) => s === params.get('status')) ?? 'all';
  const sort = SORTS.find((s) => s === params.get('sort')) ?? 'hostname';
  const order = params.get('order') === 'desc' ? 'desc' : 'asc';
  const page = Math.max(1, Number.parseInt(params.get('page') ?? '1', 10) || 1);
  const search = useDebounced(q, 250);

  const set = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === '') next.delete(k);
      else next.set(k, v);
    }
    if (!('page' in changes)) next.delete('page');
    setParams(next, { replace: true });
  };

  const query = new URLSearchParams({ limit: String(PAGE), offset: String((page - 1) * PAGE), sort, order });
  if (search.trim()) query.set('q', search.trim());
  if (status !== 'all') query.set('status', status);
  const devices = useQuery({
    queryKey: ['devices', query.toString()],
    enabled: chosen,
    placeholderData: keepPreviousData,
    queryFn: () => api.call<Schemas['DevicePage']>('GET', `/api/v1/devices?${query.toString()}`),
  });
  const policies = useQuery({
    queryKey: ['policies'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['PolicyList']>('GET', '/api/v1/policies'),
  });
  const revision = policies.data?.revision;
  const data = devices.data;
  const counts = data?.counts;
  const all = counts ? counts.online + counts.offline + counts.not_reporting + counts.revoked : undefined;

  const header = (key: Sort, label: string) => (
    <Table.Th aria-sort={sort === key ? (order === 'asc' ? 'ascending' : 'descending') : 'none'}>
      <UnstyledButton
        fw={600}
        onClick={() => set({ sort: key, order: sort === key && order === 'asc' ? 'desc' : 'asc' })}
      >
        {label} {sort === key ? (order === 'asc' ? '▲' : '▼') : ''}
      </UnstyledButton>
    </Table.Th>
  );

  return (
    <Stack>
      <Title order={2}>{t('devices.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <Group align="end">
          <TextInput
            label={t('devices.search')}
            placeholder={t('devices.searchHint')}
            value={q}
            maxLength={200}
            onChange={(e) => set({ q: e.currentTarget.value })}
            data-testid="device-search"
          />
          <SegmentedControl
            value={status}
            onChange={(v) => set({ status: v === 'all' ? null : v })}
            data={STATUSES.map((s) => {
              const n = s === 'all' ? all : counts?.[s];
              const label = s === 'all' ? t('devices.all') : t(`devices.${s}`);
              return { value: s, label: n === undefined ? label : `${label} (${n})` };
            })}
            data-testid="device-status"
          />
        </Group>
      )}
      {devices.isPending && chosen && <Loading />}
      {devices.isError && <Failure error={devices.error} retry={() => void devices.refetch()} />}
      {data && all === 0 && <Text>{t('devices.empty')}</Text>}
      {data && all !== 0 && data.total === 0 && <Text>{t('devices.noMatch')}</Text>}
      {data && data.devices.length > 0 && (
        <>
          <Table striped data-testid="devices">
            <Table.Thead>
              <Table.Tr>
                {header('hostname', t('devices.hostname'))}
                <Table.Th>{t('devices.os')}</Table.Th>
                {header('agent_version', t('devices.agent'))}
                {header('status', t('devices.status'))}
                {header('last_seen', t('devices.lastSeen'))}
                <Table.Th>{t('devices.policyColumn')}</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {data.devices.map((d) => (
                <Table.Tr key={d.id}>
                  <Table.Td>
                    <Link to={`/devices/${d.id}`}>{d.hostname}</Link>
                  </Table.Td>
                  <Table.Td>
                    {d.os_name} {d.os_version}
                  </Table.Td>
                  <Table.Td>{d.agent_version}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={STATUS_COLOR[d.status] ?? 'gray'}>
                      {t(`devices.${d.status}`, { defaultValue: d.status })}
                    </Badge>
                  </Table.Td>
                  <Table.Td>{d.last_seen_at ? dateTime(d.last_seen_at) : t('devices.never')}</Table.Td>
                  <Table.Td>
                    {revision !== undefined && d.status !== 'revoked' && (
                      <Badge variant="light" color={d.policy_version === revision ? 'teal' : 'orange'}>
                        {d.policy_version ?? '—'} / {revision}
                      </Badge>
                    )}
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
          <Group justify="space-between">
            <Text size="sm" c="dimmed" data-testid="device-range">
              {t('devices.range', {
                from: (page - 1) * PAGE + 1,
                to: (page - 1) * PAGE + data.devices.length,
                total: data.total,
              })}
            </Text>
            {data.total > PAGE && (
              <Pagination
                total={Math.ceil(data.total / PAGE)}
                value={page}
                onChange={(p) => set({ page: String(p) })}
                data-testid="device-pages"
              />
            )}
          </Group>
        </>
      )}
    </Stack>
  );
}
