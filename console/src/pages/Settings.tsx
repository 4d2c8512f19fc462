// The tenant's settings: its name, how long operation logs are kept, its
// time zone (the calendar's days), and licence use (the cap is the
// operator's).

import { Alert, Button, Card, Code, CopyButton, Group, NumberInput, Progress, Select, Stack, Text, TextInput, Title } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { dateTime, timeZones } from '../format';

export function Settings() {
  const { t } = useTranslation();
  const { isMsp, canEdit, may } = useSession();
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
          {may('issue_uninstall_code') && <UninstallCode />}
          {may('hand_over_tenant') && <HandOver managed={d.msp_org_id !== null && d.msp_org_id !== undefined} />}
        </>
      )}
    </Stack>
  );
}

/** A secret shown once, with a button that copies it. */
function ShownOnce({ code, testId }: { code: string; testId: string }) {
  const { t } = useTranslation();
  return (
    <Group>
      <Code data-testid={testId}>{code}</Code>
      <CopyButton value={code}>
        {({ copied, copy }) => (
          <Button size="xs" variant="light" onClick={copy}>
            {copied ? t('app.copied') : t('settings.copyCode')}
          </Button>
        )}
      </CopyButton>
    </Group>
  );
}

/** The code without which the agent cannot be removed from a PC: shown
 * once; a new one replaces the last on every PC. */
function UninstallCode() {
  const { t } = useTranslation();
  const [code, setCode] = useState<Schemas['IssuedUninstallCode'] | null>(null);
  const create = useSubmit(async () => {
    setCode(await api.call<Schemas['IssuedUninstallCode']>('POST', '/api/v1/tenant/uninstall-code'));
  });
  return (
    <Card withBorder>
      <form onSubmit={create.onSubmit}>
        <Stack gap="xs">
          <Title order={4}>{t('settings.uninstall')}</Title>
          <Text size="sm" c="dimmed">
            {t('settings.uninstallHint')}
          </Text>
          <FormError error={create.error} />
          {code ? (
            <Stack gap={4}>
              <Text size="sm">{t('settings.uninstallCode')}</Text>
              <ShownOnce code={code.code} testId="uninstall-code" />
            </Stack>
          ) : (
            <Button type="submit" variant="light" w="fit-content" loading={create.busy}>
              {t('settings.uninstallCreate')}
            </Button>
          )}
        </Stack>
      </form>
    </Card>
  );
}

/** The tenant's administrator hands the running of it to an MSP: a
 * one-time code, shown once, that the MSP claims. */
function HandOver({ managed }: { managed: boolean }) {
  const { t } = useTranslation();
  const [code, setCode] = useState<Schemas['Handover'] | null>(null);
  const create = useSubmit(async () => {
    setCode(await api.call<Schemas['Handover']>('POST', '/api/v1/tenant/handover'));
  });
  return (
    <Card withBorder>
      <form onSubmit={create.onSubmit}>
        <Stack gap="xs">
          <Title order={4}>{t('settings.handover')}</Title>
          {managed ? (
            <Text size="sm">{t('settings.managed')}</Text>
          ) : (
            <>
              <Text size="sm" c="dimmed">
                {t('settings.handoverHint')}
              </Text>
              <FormError error={create.error} />
              {code ? (
                <Stack gap={4}>
                  <Text size="sm">{t('settings.handoverCode', { at: dateTime(code.expires_at) })}</Text>
                  <ShownOnce code={code.code} testId="handover-code" />
                </Stack>
              ) : (
                <Button type="submit" variant="light" w="fit-content" loading={create.busy}>
                  {t('settings.handoverCreate')}
                </Button>
              )}
            </>
          )}
        </Stack>
      </form>
    </Card>
  );
}
