// One device: status, agent, its latest security status, the policy
// revision it applies against the one it should, its effective policy with
// the level each section comes from, its recent operation log; move it to
// a group, revoke or delete it (after a confirmation).

import { Alert, Badge, Button, Card, Code, Group, Modal, Select, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useCallback, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useNavigate, useParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { Fact } from '../components/Fact';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { EventTable } from '../events/EventTable';
import { SecurityCard } from '../events/SecurityCard';
import { dateTime } from '../format';

const NO_GROUP = 'no-group';

export function DeviceDetail() {
  const { t } = useTranslation();
  const { id = '' } = useParams();
  const navigate = useNavigate();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const groups = useGroups(chosen);
  const device = useQuery({
    queryKey: ['device', id],
    enabled: chosen,
    queryFn: () => api.call<Schemas['DeviceView']>('GET', `/api/v1/devices/${id}`),
  });
  const effective = useQuery({
    queryKey: ['device-policy', id],
    enabled: chosen,
    queryFn: () => api.call<Schemas['EffectiveView']>('GET', `/api/v1/devices/${id}/policy`),
  });
  const from = new Date(Date.now() - 7 * 86400_000).toISOString();
  const events = useInfiniteQuery({
    queryKey: ['events', 'device', id],
    enabled: chosen,
    initialPageParam: undefined as string | undefined,
    queryFn: ({ pageParam }) =>
      api.call<Schemas['EventPage']>('GET', '/api/v1/events', { query: { device: id, from, limit: 100, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const [confirm, setConfirm] = useState<'revoke' | 'delete' | null>(null);
  const refresh = () => {
    void queries.invalidateQueries({ queryKey: ['device', id] });
    void queries.invalidateQueries({ queryKey: ['device-policy', id] });
    void queries.invalidateQueries({ queryKey: ['devices'] });
  };
  const move = useMutation({
    mutationFn: (group: string | null) => api.call('PATCH', `/api/v1/devices/${id}`, { body: { group_id: group } }),
    onSuccess: refresh,
  });
  const act = useMutation({
    mutationFn: (what: 'revoke' | 'delete') =>
      what === 'revoke' ? api.call('POST', `/api/v1/devices/${id}/revoke`) : api.call('DELETE', `/api/v1/devices/${id}`),
    onSuccess: (_, what) => {
      setConfirm(null);
      refresh();
      if (what === 'delete') void navigate('/devices');
    },
  });
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = events;
  const loadMore = useCallback(() => void fetchNextPage(), [fetchNextPage]);
  const d = device.data;
  const eff = effective.data;
  const behind = eff && eff.applied_revision !== eff.revision;
  return (
    <Stack>
      <Link to="/devices">{t('devices.back')}</Link>
      {!chosen && <ChooseTenant />}
      {device.isPending && chosen && <Loading />}
      {device.isError && <Failure error={device.error} retry={() => void device.refetch()} />}
      {d && (
        <>
          <Group justify="space-between">
            <Title order={2} data-testid="device-title">
              {d.hostname}
            </Title>
            <Badge variant="light" color={d.status === 'online' ? 'teal' : d.status === 'revoked' ? 'red' : 'gray'}>
              {t(`devices.${d.status}`, { defaultValue: d.status })}
            </Badge>
          </Group>
          <SimpleGrid cols={{ base: 2, md: 4 }}>
            <Fact label={t('devices.os')}>
              {d.os_name} {d.os_version}
            </Fact>
            <Fact label={t('devices.agent')}>{d.agent_version}</Fact>
            <Fact label={t('devices.lastSeen')}>{d.last_seen_at ? dateTime(d.last_seen_at) : t('devices.never')}</Fact>
            <Fact label={t('devices.enrolled')}>{dateTime(d.enrolled_at)}</Fact>
            <Fact label={t('devices.machineId')}>
              <Code>{d.machine_id}</Code>
            </Fact>
            {d.clone_of && (
              <Fact label={t('devices.cloneOf')}>
                <Link to={`/devices/${d.clone_of}`}>{d.clone_of}</Link>
              </Fact>
            )}
          </SimpleGrid>
          {d.degraded && (
            <Alert color="yellow" title={t('devices.degraded')} data-testid="device-degraded">
              {d.degraded}
            </Alert>
          )}
          {move.isError && <Failure error={move.error} />}
          {act.isError && <Failure error={act.error} />}
          <Group align="end">
            <Select
              label={t('devices.group')}
              w={280}
              disabled={!canEdit || d.status === 'revoked'}
              allowDeselect={false}
              value={d.group_id ?? NO_GROUP}
              data={[{ value: NO_GROUP, label: t('devices.noGroup') }, ...groupOptions(groups.data)]}
              onChange={(v) => move.mutate(v === NO_GROUP || v === null ? null : v)}
              data-testid="device-group"
            />
            {canEdit && d.status !== 'revoked' && (
              <Button variant="light" color="orange" onClick={() => setConfirm('revoke')}>
                {t('devices.revoke')}
              </Button>
            )}
            {canEdit && (
              <Button variant="light" color="red" onClick={() => setConfirm('delete')}>
                {t('devices.delete')}
              </Button>
            )}
          </Group>
          {confirm && (
            <Modal opened onClose={() => setConfirm(null)} title={t(`devices.confirm.${confirm}Title`, { name: d.hostname })}>
              <Stack>
                <Text size="sm">{t(`devices.confirm.${confirm}`)}</Text>
                <Group justify="end">
                  <Button variant="subtle" onClick={() => setConfirm(null)}>
                    {t('app.cancel')}
                  </Button>
                  <Button color="red" loading={act.isPending} onClick={() => act.mutate(confirm)} data-testid="confirm">
                    {t(`devices.${confirm}`)}
                  </Button>
                </Group>
              </Stack>
            </Modal>
          )}
          <SimpleGrid cols={{ base: 1, lg: 2 }}>
            <SecurityCard deviceId={id} enabled={chosen} />
            <Card withBorder>
              <Stack gap="xs">
                <Group justify="space-between">
                  <Title order={4}>{t('devices.policy')}</Title>
                  {eff && (
                    <Badge variant="light" color={behind ? 'orange' : 'teal'} data-testid="policy-applied">
                      {t('devices.revisionLine', { applied: eff.applied_revision ?? '—', current: eff.revision })}
                    </Badge>
                  )}
                </Group>
                {eff?.apply_error && (
                  <Alert color="red" title={t('devices.applyError')}>
                    {eff.apply_error}
                  </Alert>
                )}
                {effective.isError && <Failure error={effective.error} />}
                {eff && Object.keys(eff.origins).length === 0 && <Text size="sm">{t('devices.noPolicy')}</Text>}
                {eff && Object.keys(eff.origins).length > 0 && (
                  <Table data-testid="origins">
                    <Table.Thead>
                      <Table.Tr>
                        <Table.Th>{t('devices.section')}</Table.Th>
                        <Table.Th>{t('devices.from')}</Table.Th>
                        <Table.Th>{t('policy.version')}</Table.Th>
                      </Table.Tr>
                    </Table.Thead>
                    <Table.Tbody>
                      {Object.entries(eff.origins).map(([section, o]) => (
                        <Table.Tr key={section}>
                          <Table.Td>{t(`policy.sections.${section}`, { defaultValue: section })}</Table.Td>
                          <Table.Td>
                            <Link
                              to={
                                o.scope === 'tenant'
                                  ? '/policies'
                                  : `/policies?scope=${o.scope}&id=${o.target_id ?? ''}`
                              }
                            >
                              {t(`policy.scopes.${o.scope}`, { defaultValue: o.scope })}
                              {o.scope === 'group' && o.target_id
                                ? `: ${groupOptions(groups.data).find((g) => g.value === o.target_id)?.label ?? ''}`
                                : ''}
                            </Link>
                          </Table.Td>
                          <Table.Td>{o.version}</Table.Td>
                        </Table.Tr>
                      ))}
                    </Table.Tbody>
                  </Table>
                )}
                {canEdit && (
                  <Link to={`/policies?scope=device&id=${d.id}`}>{t('devices.editOwnPolicy')}</Link>
                )}
              </Stack>
            </Card>
          </SimpleGrid>
          <Title order={4}>{t('devices.recent')}</Title>
          {events.isError && <Failure error={events.error} />}
          {events.isSuccess && (events.data.pages[0]?.events.length ?? 0) === 0 && <Text size="sm">{t('events.none')}</Text>}
          {(events.data?.pages[0]?.events.length ?? 0) > 0 && (
            <EventTable
              events={events.data?.pages.flatMap((p) => p.events) ?? []}
              hasMore={hasNextPage}
              loadingMore={isFetchingNextPage}
              loadMore={loadMore}
              height={360}
            />
          )}
        </>
      )}
    </Stack>
  );
}
