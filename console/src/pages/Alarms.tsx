import { Badge, Button, Stack, Table, Text, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { dateTime } from '../format';

export function Alarms() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const alarms = useQuery({
    queryKey: ['alarms'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['AlarmPage']>('GET', '/api/v1/alarms', { query: { limit: 200 } }),
  });
  const acknowledge = useMutation({
    mutationFn: (id: string) => api.call<unknown>('POST', `/api/v1/alarms/${id}/acknowledge`),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['alarms'] }),
  });
  return (
    <Stack>
      <Title order={2}>{t('alarms.title')}</Title>
      {!chosen && <ChooseTenant />}
      {alarms.isPending && chosen && <Loading />}
      {alarms.isError && <Failure error={alarms.error} retry={() => void alarms.refetch()} />}
      {acknowledge.isError && <Failure error={acknowledge.error} />}
      {alarms.data && alarms.data.alarms.length === 0 && <Text>{t('alarms.empty')}</Text>}
      {alarms.data && alarms.data.alarms.length > 0 && (
        <Table striped data-testid="alarms">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('alarms.when')}</Table.Th>
              <Table.Th>{t('alarms.category')}</Table.Th>
              <Table.Th>{t('alarms.summary')}</Table.Th>
              <Table.Th>{t('alarms.user')}</Table.Th>
              <Table.Th>{t('alarms.count')}</Table.Th>
              <Table.Th>{t('alarms.status')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {alarms.data.alarms.map((a) => (
              <Table.Tr key={a.id}>
                <Table.Td>{dateTime(a.last_at)}</Table.Td>
                <Table.Td>{t(`category.${a.category}`)}</Table.Td>
                <Table.Td>{a.summary}</Table.Td>
                <Table.Td>{a.os_user}</Table.Td>
                <Table.Td>{a.count}</Table.Td>
                <Table.Td>
                  {a.status === 'open' && canEdit ? (
                    <Button size="xs" variant="light" loading={acknowledge.isPending} onClick={() => acknowledge.mutate(a.id)}>
                      {t('alarms.acknowledge')}
                    </Button>
                  ) : (
                    <Badge variant="light" color={a.status === 'open' ? 'red' : 'gray'}>
                      {t(a.status === 'open' ? 'alarms.open' : 'alarms.acknowledged')}
                    </Badge>
                  )}
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
