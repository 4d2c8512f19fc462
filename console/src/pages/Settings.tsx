// The tenant's settings: its name, how long operation logs are kept, its
// time zone (the calendar's days), and licence use (the cap is the
// operator's).

import { Alert, Button, Card, Group, NumberInput, Progress, Select, Stack, Text, TextInput, Title } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';

function timeZones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (k: string) => string[] };
  return intl.supportedValuesOf?.('timeZone') ?? ['Asia/Tokyo', 'UTC'];
}

export function Settings() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const tenant = useQuery({
    queryKey: ['tenant'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['TenantSettings']>('GET', '/api/v1/tenant'),
  });
  const [name, setName] = useState('');
  const [retention, setRetention] = useState<number | string>(365);
  const [zone, setZone] = useState('Asia/Tokyo');
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    if (!tenant.data) return;
    setName(tenant.data.name);
    setRetention(tenant.data.retention_days);
    setZone(tenant.data.time_zone);
  }, [tenant.data]);
  const save = useSubmit(
    async () => {
      setSaved(false);
      await api.call('PATCH', '/api/v1/tenant', { body: { name, retention_days: Number(retention), time_zone: zone } });
      setSaved(true);
      await queries.invalidateQueries({ queryKey: ['tenant'] });
      await queries.invalidateQueries({ queryKey: ['calendar'] });
    },
    ['name', 'retention_days', 'time_zone'],
  );
  const d = tenant.data;
  const zones = timeZones();
  return (
    <Stack maw={640}>
      <Title order={2}>{t('settings.title')}</Title>
      {!chosen && <ChooseTenant />}
      {tenant.isPending && chosen && <Loading />}
      {tenant.isError && <Failure error={tenant.error} />}
      {d && (
        <>
          <Card withBorder>
            <Stack gap="xs">
              <Title order={4}>{t('settings.licence')}</Title>
              <Text size="sm" data-testid="licence-use">
                {t('settings.licenceUse', { used: d.devices, cap: d.device_limit })}
              </Text>
              <Progress value={d.device_limit ? (100 * d.devices) / d.device_limit : 0} color={d.devices >= d.device_limit ? 'red' : 'teal'} />
              <Text size="xs" c="dimmed">
                {t('settings.licenceHint')}
              </Text>
            </Stack>
          </Card>
          <form onSubmit={save.onSubmit}>
            <Stack>
              <TextInput label={t('settings.name')} value={name} maxLength={200} disabled={!canEdit} error={save.fieldError('name')} onChange={(e) => setName(e.currentTarget.value)} />
              <NumberInput
                label={t('settings.retention')}
                description={t('settings.retentionHint')}
                min={90}
                max={2557}
                clampBehavior="none"
                value={retention}
                disabled={!canEdit}
                error={save.fieldError('retention_days')}
                onChange={setRetention}
              />
              <Select
                label={t('settings.timeZone')}
                description={t('settings.timeZoneHint')}
                searchable
                allowDeselect={false}
                value={zone}
                data={zones.includes(zone) ? zones : [zone, ...zones]}
                disabled={!canEdit}
                error={save.fieldError('time_zone')}
                onChange={(v) => setZone(v ?? zone)}
              />
              <FormError error={save.error} />
              {saved && (
                <Alert color="teal" data-testid="settings-saved">
                  {t('settings.saved')}
                </Alert>
              )}
              {canEdit && (
                <Group>
                  <Button type="submit" loading={save.busy}>
                    {t('app.save')}
                  </Button>
                </Group>
              )}
            </Stack>
          </form>
        </>
      )}
    </Stack>
  );
}
