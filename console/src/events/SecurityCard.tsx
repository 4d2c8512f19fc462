// A device's latest security status (its newest `security_status` event):
// pending updates, antivirus, firewall and disk encryption, each with a
// badge coloured by how urgent it is, and when the agent reported it.

import { Badge, Card, Group, SimpleGrid, Stack, Text, Title } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { Fact } from '../components/Fact';
import { Failure } from '../components/Feedback';
import { dateTime } from '../format';
import { LEVEL_COLOR, type Level, antivirusLevel, diskLevel, firewallLevel, securityStatus, updatesLevel } from './security';

/** How far back the latest status is looked for. The agent reports daily,
 * so only a device that has been off this long has none; bounding it keeps
 * the search to a month of the device's events when there is none. */
const WINDOW_DAYS = 30;

function Rated({ level, testId, children }: { level: Level; testId: string; children: React.ReactNode }) {
  return (
    <Badge variant="light" color={LEVEL_COLOR[level]} data-testid={testId} data-level={level}>
      {children}
    </Badge>
  );
}

export function SecurityCard({ deviceId, enabled }: { deviceId: string; enabled: boolean }) {
  const { t } = useTranslation();
  const latest = useQuery({
    queryKey: ['security', deviceId],
    enabled,
    queryFn: () =>
      api.call<Schemas['EventPage']>('GET', '/api/v1/events', {
        query: {
          device: deviceId,
          kind: 'security_status',
          from: new Date(Date.now() - WINDOW_DAYS * 86400_000).toISOString(),
          limit: 1,
        },
      }),
  });
  const event = latest.data?.events[0];
  const s = event ? securityStatus(event.detail) : null;
  return (
    <Card withBorder data-testid="security">
      <Stack gap="xs">
        <Group justify="space-between">
          <Title order={4}>{t('devices.security.title')}</Title>
          {event && (
            <Text size="xs" c="dimmed" data-testid="security-reported">
              {t('devices.security.reported', { at: dateTime(event.time) })}
            </Text>
          )}
        </Group>
        {latest.isError && <Failure error={latest.error} retry={() => void latest.refetch()} />}
        {latest.isSuccess && !s && (
          <Text size="sm" c="dimmed" data-testid="security-none">
            {t('devices.security.none', { days: WINDOW_DAYS })}
          </Text>
        )}
        {s && (
          <SimpleGrid cols={{ base: 1, sm: 2 }}>
            <Fact label={t('devices.security.updates')}>
              <Rated level={updatesLevel(s)} testId="security-updates">
                {s.pendingUpdates === 0 && s.pendingSecurityUpdates === 0
                  ? t('devices.security.updatesNone')
                  : s.pendingSecurityUpdates > 0
                    ? t('devices.security.updatesSecurity', { count: s.pendingUpdates, security: s.pendingSecurityUpdates })
                    : t('devices.security.updatesPending', { count: s.pendingUpdates })}
              </Rated>
            </Fact>
            <Fact label={t('devices.security.antivirus')}>
              <Stack gap={2}>
                <Group gap="xs">
                  <Rated level={antivirusLevel(s)} testId="security-antivirus">
                    {!s.antivirusProduct
                      ? t('devices.security.antivirusNone')
                      : !s.antivirusEnabled
                        ? t('devices.security.antivirusDisabled')
                        : s.antivirusUpToDate
                          ? t('devices.security.antivirusCurrent')
                          : t('devices.security.antivirusOutdated')}
                  </Rated>
                  {s.antivirusProduct && <span data-testid="security-antivirus-product">{s.antivirusProduct}</span>}
                </Group>
                {s.antivirusProduct && (
                  <Text size="xs" c="dimmed" data-testid="security-signatures">
                    {s.antivirusSignatureAgeDays === 0
                      ? t('devices.security.signaturesToday')
                      : t('devices.security.signaturesAge', { count: s.antivirusSignatureAgeDays })}
                    {s.antivirusSignatureVersion && ` (${s.antivirusSignatureVersion})`}
                  </Text>
                )}
              </Stack>
            </Fact>
            <Fact label={t('devices.security.firewall')}>
              <Group gap="xs">
                <Rated level={firewallLevel(s)} testId="security-firewall">
                  {s.firewallActive ? t('devices.security.firewallActive') : t('devices.security.firewallInactive')}
                </Rated>
                {s.firewall && <span data-testid="security-firewall-name">{s.firewall}</span>}
              </Group>
            </Fact>
            <Fact label={t('devices.security.disk')}>
              <Group gap="xs">
                <Rated level={diskLevel(s)} testId="security-disk">
                  {s.diskEncrypted ? t('devices.security.diskEncrypted') : t('devices.security.diskPlain')}
                </Rated>
                {s.diskEncryption && <span data-testid="security-disk-how">{s.diskEncryption}</span>}
              </Group>
            </Fact>
            {s.patchLevel && (
              <Fact label={t('devices.security.patchLevel')}>
                <span data-testid="security-patch-level">{s.patchLevel}</span>
              </Fact>
            )}
          </SimpleGrid>
        )}
      </Stack>
    </Card>
  );
}
