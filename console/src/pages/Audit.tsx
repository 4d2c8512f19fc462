// The tenant's audit trail: who did what, when, from where — every admin
// action and every read of the operation log, newest first.

import { Button, Code, Group, Select, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { keepPreviousData, useInfiniteQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { useDebounced } from '../components/useDebounced';
import { dateTime } from '../format';

/** Actions offered in the filter (any other can be typed). */
const ACTIONS = [
  'events.search',
  'events.export',
  'events.alarm_context',
  'alarm.acknowledge',
  'alarm.acknowledge_many',
  'device.revoke',
  'device.delete',
  'device.move',
  'enrollment_token.create',
  'enrollment_token.revoke',
  'group.create',
  'group.update',
  'group.delete',
  'policy.update',
  'policy.clear',
  'policy.apply_template',
  'tenant.update',
  'tenant.handover_code',
  'tenant.uninstall_code',
  'tenant.claimed',
  'tenant.released',
  'user.create',
  'user.invite',
  'user.update',
  'user.invitation_revoke',
  'msp.access_granted',
  'msp.access_removed',
  'webhook.create',
  'webhook.delete',
  'webhook.test',
];

export function Audit() {
  const { t } = useTranslation();
  const { isMsp } = useSession();
  const chosen = useTenantChosen(isMsp);
  const [action, setAction] = useState<string | null>(null);
  const [typed, setTyped] = useState('');
  const typedSettled = useDebounced(typed, 300).trim();
  const wanted = action ?? (typedSettled || undefined);
  const audit = useInfiniteQuery({
    queryKey: ['audit', wanted],
    enabled: chosen,
    initialPageParam: undefined as string | undefined,
    placeholderData: keepPreviousData,
    queryFn: ({ pageParam }) =>
      api.call<Schemas['AuditPage']>('GET', '/api/v1/audit', { query: { action: wanted, limit: 100, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const entries = audit.data?.pages.flatMap((p) => p.entries) ?? [];
  return (
    <Stack>
      <Title order={2}>{t('audit.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <Group align="end">
          <Select
            label={t('audit.action')}
            placeholder={t('audit.anyAction')}
            clearable
            searchable
            value={action}
            data={ACTIONS}
            onChange={setAction}
            w={260}
          />
          <TextInput label={t('audit.otherAction')} value={typed} maxLength={100} onChange={(e) => setTyped(e.currentTarget.value)} disabled={action !== null} />
        </Group>
      )}
      {audit.isPending && chosen && <Loading />}
      {audit.isError && <Failure error={audit.error} />}
      {audit.isSuccess && entries.length === 0 && <Text size="sm">{t('audit.none')}</Text>}
      {entries.length > 0 && (
        <Table striped data-testid="audit">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('audit.at')}</Table.Th>
              <Table.Th>{t('audit.who')}</Table.Th>
              <Table.Th>{t('audit.action')}</Table.Th>
              <Table.Th>{t('audit.target')}</Table.Th>
              <Table.Th>{t('audit.details')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {entries.map((e) => (
              <Table.Tr key={e.id}>
                <Table.Td>{dateTime(e.at)}</Table.Td>
                <Table.Td>
                  <Text size="sm">{e.actor_email}</Text>
                  <Text size="xs" c="dimmed">
                    {t(`role.${e.actor_role}`, { defaultValue: e.actor_role })}
                    {e.client_ip ? ` · ${e.client_ip}` : ''}
                  </Text>
                </Table.Td>
                <Table.Td>
                  <Code>{e.action}</Code>
                </Table.Td>
                <Table.Td style={{ wordBreak: 'break-all' }}>{e.target}</Table.Td>
                <Table.Td>
                  <Code style={{ whiteSpace: 'pre-wrap', wordBreak: 'break-all' }}>{JSON.stringify(e.details)}</Code>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      {audit.hasNextPage && (
        <Button variant="subtle" w="fit-content" loading={audit.isFetchingNextPage} onClick={() => void audit.fetchNextPage()}>
          {t('audit.more')}
        </Button>
      )}
    </Stack>
  );
}
