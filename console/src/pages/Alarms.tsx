// Alarms: filtered by status, category and group, acknowledged one at a
// time or in bulk, each opening its detail with the device's operation
// log around it.

import { Badge, Button, Checkbox, Group, Select, Stack, Table, Text, Title } from '@mantine/core';
import { keepPreviousData, useInfiniteQuery, useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { dateTime } from '../format';
import { CATEGORIES } from '../policy/Editor';

export function Alarms() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const groups = useGroups(chosen);
  const [params, setParams] = useSearchParams();
  const status = params.get('status') ?? 'open';
  const category = params.get('category');
  const group = params.get('group');
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const set = (k: string, v: string | null) => {
    const next = new URLSearchParams(params);
    if (v) next.set(k, v);
    else next.delete(k);
    setParams(next, { replace: true });
    setSelected(new Set());
  };
  const query = {
    status: status === 'all' ? undefined : status,
    category: category ?? undefined,
    group: group ?? undefined,
    limit: 100,
  };
  const alarms = useInfiniteQuery({
    queryKey: ['alarms', query],
    enabled: chosen,
    initialPageParam: undefined as string | undefined,
    placeholderData: keepPreviousData,
    queryFn: ({ pageParam }) => api.call<Schemas['AlarmPage']>('GET', '/api/v1/alarms', { query: { ...query, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const list = alarms.data?.pages.flatMap((p) => p.alarms) ?? [];
  const acknowledge = useMutation({
    mutationFn: (ids: string[]) =>
      api.call<Schemas['Acknowledged']>('POST', '/api/v1/alarms/acknowledge', { body: { ids } }),
    onSuccess: () => {
      setSelected(new Set());
      void queries.invalidateQueries({ queryKey: ['alarms'] });
      void queries.invalidateQueries({ queryKey: ['tenant'] });
    },
  });
  const open = list.filter((a) => a.status === 'open');
  const toggle = (id: string) => {
    const next = new Set(selected);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
  };
  return (
    <Stack>
      <Title order={2}>{t('alarms.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <Group align="end">
          <Select
            label={t('alarms.status')}
            value={status}
            allowDeselect={false}
            data={['open', 'acknowledged', 'all'].map((s) => ({ value: s, label: t(`alarms.statuses.${s}`) }))}
            onChange={(v) => set('status', v)}
            w={160}
          />
          <Select
            label={t('alarms.category')}
            placeholder={t('alarms.anyCategory')}
            clearable
            value={category}
            data={CATEGORIES.map((c) => ({ value: c, label: t(`category.${c}`) }))}
            onChange={(v) => set('category', v)}
            w={220}
          />
          <Select
            label={t('alarms.group')}
            placeholder={t('alarms.anyGroup')}
            clearable
            value={group}
            data={groupOptions(groups.data)}
            onChange={(v) => set('group', v)}
            w={220}
          />
          {canEdit && (
            <Button
              disabled={selected.size === 0}
              loading={acknowledge.isPending}
              onClick={() => acknowledge.mutate([...selected])}
              data-testid="acknowledge-selected"
            >
              {t('alarms.acknowledgeSelected', { count: selected.size })}
            </Button>
          )}
        </Group>
      )}
      {alarms.isPending && chosen && <Loading />}
      {alarms.isError && <Failure error={alarms.error} retry={() => void alarms.refetch()} />}
      {acknowledge.isError && <Failure error={acknowledge.error} />}
      {alarms.isSuccess && list.length === 0 && <Text>{t('alarms.empty')}</Text>}
      {list.length > 0 && (
        <Table striped highlightOnHover data-testid="alarms">
          <Table.Thead>
            <Table.Tr>
              {canEdit && (
                <Table.Th w={40}>
                  <Checkbox
                    aria-label={t('alarms.selectAll')}
                    checked={open.length > 0 && open.every((a) => selected.has(a.id))}
                    indeterminate={selected.size > 0 && !open.every((a) => selected.has(a.id))}
                    onChange={(e) => setSelected(e.currentTarget.checked ? new Set(open.map((a) => a.id)) : new Set())}
                  />
                </Table.Th>
              )}
              <Table.Th>{t('alarms.when')}</Table.Th>
              <Table.Th>{t('alarms.category')}</Table.Th>
              <Table.Th>{t('alarms.summary')}</Table.Th>
              <Table.Th>{t('alarms.user')}</Table.Th>
              <Table.Th>{t('alarms.count')}</Table.Th>
              <Table.Th>{t('alarms.status')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {list.map((a) => (
              <Table.Tr key={a.id} data-testid="alarm-row">
                {canEdit && (
                  <Table.Td>
                    {a.status === 'open' && (
                      <Checkbox aria-label={t('alarms.select')} checked={selected.has(a.id)} onChange={() => toggle(a.id)} />
                    )}
                  </Table.Td>
                )}
                <Table.Td>
                  <Link to={`/alarms/${a.id}`}>{dateTime(a.last_at)}</Link>
                </Table.Td>
                <Table.Td>{t(`category.${a.category}`, { defaultValue: a.category })}</Table.Td>
                <Table.Td>{a.summary}</Table.Td>
                <Table.Td>{a.os_user}</Table.Td>
                <Table.Td>{a.count}</Table.Td>
                <Table.Td>
                  <Badge variant="light" color={a.status === 'open' ? 'red' : 'gray'}>
                    {t(a.status === 'open' ? 'alarms.open' : 'alarms.acknowledged')}
                  </Badge>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      {alarms.hasNextPage && (
        <Button variant="subtle" w="fit-content" loading={alarms.isFetchingNextPage} onClick={() => void alarms.fetchNextPage()}>
          {t('alarms.more')}
        </Button>
      )}
    </Stack>
  );
}
