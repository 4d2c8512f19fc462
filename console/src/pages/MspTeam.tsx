// The MSP's own people: invite administrators and technicians, change a
// role, disable an account, and choose the tenants each technician may
// act on.

import { Alert, Button, Group, MultiSelect, Stack, Text, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { Failure } from '../components/Feedback';
import { People } from '../components/People';

/** A technician's tenants: chosen in a list, saved with one button. */
function Access({ user, tenants }: { user: Schemas['UserView']; tenants: Schemas['TenantSummary'][] }) {
  const { t } = useTranslation();
  const queries = useQueryClient();
  const [chosen, setChosen] = useState<string[]>(user.tenant_access ?? []);
  useEffect(() => setChosen(user.tenant_access ?? []), [user.tenant_access]);
  const save = useMutation({
    mutationFn: () => api.call('PUT', `/api/v1/org/users/${user.id}/tenants`, { body: { tenant_ids: chosen }, tenant: false }),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['users', '/api/v1/org'] }),
  });
  const changed = [...chosen].sort().join() !== [...(user.tenant_access ?? [])].sort().join();
  return (
    <Stack gap={4}>
      <Group gap="xs" align="end" wrap="nowrap">
        <MultiSelect
          aria-label={t('team.access')}
          size="xs"
          w={320}
          placeholder={chosen.length === 0 ? t('team.noAccess') : undefined}
          data={tenants.map((x) => ({ value: x.id, label: x.name }))}
          value={chosen}
          onChange={setChosen}
          searchable
        />
        <Button size="compact-sm" disabled={!changed} loading={save.isPending} onClick={() => save.mutate()}>
          {t('app.save')}
        </Button>
      </Group>
      {save.isError && <Failure error={save.error} />}
    </Stack>
  );
}

export function MspTeam() {
  const { t } = useTranslation();
  const { may } = useSession();
  const admin = may('manage_org');
  const tenants = useQuery({
    queryKey: ['tenants'],
    enabled: admin,
    queryFn: () => api.call<Schemas['TenantSummary'][]>('GET', '/api/v1/tenants', { tenant: false }),
  });
  return (
    <Stack>
      <Title order={2}>{t('team.title')}</Title>
      {!admin && <Alert color="gray">{t('app.readOnly')}</Alert>}
      {tenants.isError && <Failure error={tenants.error} />}
      <People
        scope={{ base: '/api/v1/org', tenant: false, roles: ['msp_technician', 'msp_admin'], enabled: admin }}
        loading={tenants.isPending}
        extra={{
          header: t('team.access'),
          cell: (u) =>
            u.role === 'msp_technician' ? (
              <Access user={u} tenants={tenants.data ?? []} />
            ) : (
              <Text size="sm" c="dimmed">
                {t('team.allTenants')}
              </Text>
            ),
        }}
      />
    </Stack>
  );
}
