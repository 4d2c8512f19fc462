import { Badge, Stack, Table, Text, Title } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { dateTime } from '../format';

const STATUS_COLOR: Record<string, string> = { online: 'teal', offline: 'gray', revoked: 'red' };

export function Devices() {
  const { t } = useTranslation();
  const { isMsp } = useSession();
  const chosen = useTenantChosen(isMsp);
  const devices = useQuery({
    queryKey: ['devices'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['DeviceView'][]>('GET', '/api/v1/devices'),
  });
  return (
    <Stack>
      <Title order={2}>{t('devices.title')}</Title>
      {!chosen && <ChooseTenant />}
      {devices.isPending && chosen && <Loading />}
      {devices.isError && <Failure error={devices.error} retry={() => void devices.refetch()} />}
      {devices.data && devices.data.length === 0 && <Text>{t('devices.empty')}</Text>}
      {devices.data && devices.data.length > 0 && (
        <Table striped data-testid="devices">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('devices.hostname')}</Table.Th>
              <Table.Th>{t('devices.os')}</Table.Th>
              <Table.Th>{t('devices.agent')}</Table.Th>
              <Table.Th>{t('devices.status')}</Table.Th>
              <Table.Th>{t('devices.lastSeen')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {devices.data.map((d) => (
              <Table.Tr key={d.id}>
                <Table.Td>{d.hostname}</Table.Td>
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
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
