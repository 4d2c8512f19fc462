// The dashboard: open alarms, devices online and offline, licences in use,
// and the violation calendar of a month (alarms per day and category, as
// LanScope's): a click on a day lists that day's alarms.

import { Alert, Badge, Button, Card, Group, Paper, Select, SimpleGrid, Stack, Table, Text, Title, Tooltip, UnstyledButton } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { Suspense, lazy, useMemo, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Navigate, useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { Failure, Loading, useTenantChosen } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { browserTimeZone, dateTime, startOfDay, timeZones } from '../format';

/** A short mark per alarm category, for the calendar's cells. */
const MARK: Record<string, string> = {
  environment_change: 'ENV',
  new_app: 'NEW',
  banned_app: 'APP',
  after_hours: 'HRS',
  confidential_folder: 'DOC',
  mass_print: 'PRN',
  banned_web: 'WEB',
  device_control: 'USB',
  unauthorized_pc: 'LAN',
};

/** ECharts is loaded only when the dashboard has drawn. */
const MonthChart = lazy(() => import('../charts/MonthChart'));

function monthOf(d: Date): string {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
}

function shift(month: string, by: number): string {
  const [y, m] = month.split('-').map(Number);
  return monthOf(new Date(y ?? 2000, (m ?? 1) - 1 + by, 1));
}

function Stat({ label, value, testId }: { label: string; value: string | number; testId: string }) {
  return (
    <Card withBorder>
      <Text size="sm" c="dimmed">
        {label}
      </Text>
      <Text fz={28} fw={700} data-testid={testId}>
        {value}
      </Text>
    </Card>
  );
}

/** The time zones offered: the browser's list, with the current and the
 * browser's own first. */
function zoneList(current: string): string[] {
  return [...new Set([current, browserTimeZone(), 'UTC', ...timeZones()])];
}

function Calendar() {
  const { t } = useTranslation();
  const [month, setMonth] = useState(monthOf(new Date()));
  const [day, setDay] = useState<string | null>(null);
  // No choice: the tenant's time zone (the server's default).
  const [zone, setZone] = useState<string | null>(null);
  const [group, setGroup] = useState<string | null>(null);
  const groups = useGroups();
  const calendar = useQuery({
    queryKey: ['calendar', month, zone, group],
    queryFn: () =>
      api.call<Schemas['Calendar']>('GET', '/api/v1/alarms/calendar', {
        query: { month, tz: zone ?? undefined, group: group ?? undefined },
      }),
  });
  const tz = calendar.data?.time_zone ?? zone ?? 'UTC';
  const dayAlarms = useQuery({
    queryKey: ['alarms-of-day', day, tz, group],
    enabled: day !== null && calendar.isSuccess,
    queryFn: async () => {
      const from = startOfDay(day ?? '', tz);
      const next = new Date(`${day}T00:00:00Z`);
      next.setUTCDate(next.getUTCDate() + 1);
      const to = startOfDay(next.toISOString().slice(0, 10), tz);
      return api.call<Schemas['AlarmPage']>('GET', '/api/v1/alarms', {
        query: { from: from.toISOString(), to: to.toISOString(), group: group ?? undefined, limit: 200 },
      });
    },
  });
  const categories = useMemo(
    () => (calendar.data?.categories ?? []).map((id) => ({ id, label: t(`category.${id}`) })),
    [calendar.data?.categories, t],
  );
  if (calendar.isPending) return <Loading />;
  if (calendar.isError) return <Failure error={calendar.error} retry={() => void calendar.refetch()} />;
  const days = calendar.data.days;
  // Monday-first weeks: blanks before the 1st.
  const first = new Date(`${month}-01T00:00:00`);
  const lead = (first.getDay() + 6) % 7;
  const cells: (Schemas['CalendarDay'] | null)[] = [...Array<null>(lead).fill(null), ...days];
  return (
    <Stack>
      <Group justify="space-between">
        <Title order={3}>{t('dashboard.calendar')}</Title>
        <Group gap="xs">
          <Button size="xs" variant="default" onClick={() => setMonth(shift(month, -1))}>
            {t('dashboard.previous')}
          </Button>
          <Text fw={600} data-testid="calendar-month">
            {month}
          </Text>
          <Button size="xs" variant="default" onClick={() => setMonth(shift(month, 1))}>
            {t('dashboard.next')}
          </Button>
        </Group>
      </Group>
      <Group>
        <Select
          size="xs"
          label={t('dashboard.group')}
          placeholder={t('dashboard.allGroups')}
          clearable
          value={group}
          data={groupOptions(groups.data)}
          onChange={(v) => {
            setGroup(v);
            setDay(null);
          }}
          w={240}
        />
        <Select
          size="xs"
          label={t('dashboard.timeZone')}
          searchable
          allowDeselect={false}
          value={calendar.data.time_zone}
          data={zoneList(calendar.data.time_zone)}
          onChange={(v) => {
            setZone(v);
            setDay(null);
          }}
          w={220}
          data-testid="calendar-zone"
        />
      </Group>
      <SimpleGrid cols={7} spacing={4}>
        {t('dashboard.weekdays')
          .split(',')
          .map((w) => (
            <Text key={w} size="xs" ta="center" c="dimmed">
              {w}
            </Text>
          ))}
        {cells.map((c, i) =>
          c === null ? (
            <div key={`blank-${i}`} />
          ) : (
            <UnstyledButton key={c.date} onClick={() => setDay(c.date)} data-testid={`day-${c.date}`}>
              <Paper withBorder p={4} mih={64} bg={day === c.date ? 'var(--mantine-color-teal-light)' : undefined}>
                <Text size="xs" fw={600}>
                  {Number(c.date.slice(8))}
                </Text>
                <Group gap={2}>
                  {Object.entries(c.counts).map(([category, n]) => (
                    <Tooltip key={category} label={t(`category.${category}`)}>
                      <Badge size="xs" color="red" variant="light" data-category={category}>
                        {MARK[category] ?? '?'} {n}
                      </Badge>
                    </Tooltip>
                  ))}
                </Group>
              </Paper>
            </UnstyledButton>
          ),
        )}
      </SimpleGrid>
      <Card withBorder p="xs">
        <Text size="sm" fw={600}>
          {t('dashboard.perDay')}
        </Text>
        <Suspense fallback={<Loading />}>
          <MonthChart
            days={days}
            categories={categories}
            onDay={setDay}
            label={t('dashboard.chartLabel', { month, count: days.reduce((n, d) => n + d.total, 0) })}
          />
        </Suspense>
      </Card>
      {day && (
        <Stack gap="xs">
          <Title order={4}>{t('dashboard.dayAlarms', { date: day })}</Title>
          {dayAlarms.isPending && <Loading />}
          {dayAlarms.isError && <Failure error={dayAlarms.error} />}
          {dayAlarms.data && dayAlarms.data.alarms.length === 0 && <Text size="sm">{t('dashboard.none')}</Text>}
          {dayAlarms.data && dayAlarms.data.alarms.length > 0 && (
            <Table data-testid="day-alarms">
              <Table.Tbody>
                {dayAlarms.data.alarms.map((a) => (
                  <Table.Tr key={a.id}>
                    <Table.Td>{dateTime(a.first_at)}</Table.Td>
                    <Table.Td>{t(`category.${a.category}`)}</Table.Td>
                    <Table.Td>{a.summary}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          )}
        </Stack>
      )}
    </Stack>
  );
}

export function Dashboard() {
  const { t } = useTranslation();
  const { me, isMsp } = useSession();
  const [params] = useSearchParams();
  const chosen = useTenantChosen(isMsp);
  const tenant = useQuery({
    queryKey: ['tenant'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['TenantSettings']>('GET', '/api/v1/tenant'),
  });
  const devices = useQuery({
    queryKey: ['devices', 'counts'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['DevicePage']>('GET', '/api/v1/devices?limit=1'),
  });
  const welcome = params.get('welcome') === '1' && me && !me.email_verified;
  // An MSP user who has not chosen a tenant starts at the tenants overview.
  if (!chosen) return <Navigate to={params.get('welcome') ? '/msp?welcome=1' : '/msp'} replace />;
  return (
    <Stack>
      <Title order={2}>{t('dashboard.title')}</Title>
      {welcome && <Alert color="blue">{t('auth.checkMail', { email: me.email })}</Alert>}
      {chosen && (
        <>
          {(tenant.isError || devices.isError) && <Failure error={tenant.error ?? devices.error} />}
          <SimpleGrid cols={{ base: 2, md: 5 }}>
            <Stat label={t('dashboard.openAlarms')} value={tenant.data?.open_alarms ?? '…'} testId="open-alarms" />
            <Stat
              label={t('dashboard.devicesOnline')}
              value={devices.data?.counts.online ?? '…'}
              testId="devices-online"
            />
            <Stat
              label={t('dashboard.devicesOffline')}
              value={devices.data?.counts.offline ?? '…'}
              testId="devices-offline"
            />
            <Stat
              label={t('dashboard.devicesNotReporting')}
              value={devices.data?.counts.not_reporting ?? '…'}
              testId="devices-not-reporting"
            />
            <Stat
              label={t('dashboard.licence')}
              value={tenant.data ? `${tenant.data.devices} / ${tenant.data.device_limit}` : '…'}
              testId="licence"
            />
          </SimpleGrid>
          <Calendar />
        </>
      )}
    </Stack>
  );
}
