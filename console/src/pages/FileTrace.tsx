// The file trace: every operation on a file and on its content across the
// tenant's PCs, oldest first — created, copied to the desktop, renamed,
// taken on a USB stick (which one, by serial), copied off it elsewhere.
// It starts where the API's does (`?event=`, `?device=&path=` or
// `?sha256=`): from a confidential-folder alarm, a file event of the
// operation log, or a content hash; a hash in the table starts a trace of
// that content. Times are in the tenant's time zone, to the second.

import { Alert, Anchor, Badge, Button, Code, Group, Stack, Table, Text, TextInput, Title, Tooltip } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useNavigate, useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { fileDetail, startOf, traceLink } from '../events/fileTrace';
import type { FileDetail } from '../events/fileTrace';
import { preciseTime } from '../format';

/** Hex digits of a hash the table shows (the link carries all 64). */
const SHORT_HASH = 12;

function HashForm() {
  const { t } = useTranslation();
  const navigate = useNavigate();
  const [hash, setHash] = useState('');
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        // The API says what is wrong with it.
        void navigate(traceLink({ sha256: hash.trim().toLowerCase() }));
      }}
    >
      <Group align="end" gap="sm">
        <TextInput
          label={t('trace.hash')}
          value={hash}
          maxLength={64}
          onChange={(e) => setHash(e.currentTarget.value)}
          w={520}
          styles={{ input: { fontFamily: 'var(--mantine-font-family-monospace)' } }}
          data-testid="trace-hash-input"
        />
        <Button type="submit" variant="light" disabled={!hash.trim()}>
          {t('trace.go')}
        </Button>
      </Group>
    </form>
  );
}

function Medium({ f }: { f: FileDetail }) {
  const { t } = useTranslation();
  const ids = f.vendor || f.product ? `${f.vendor}:${f.product}` : '';
  if (!f.removable && !ids && !f.serial) return null;
  return (
    <Stack gap={0}>
      <Text size="sm">{ids || t('trace.removable')}</Text>
      {f.serial && (
        <Text size="xs" c="dimmed">
          {t('trace.serial', { serial: f.serial })}
        </Text>
      )}
    </Stack>
  );
}

function Hash({ f }: { f: FileDetail }) {
  const { t } = useTranslation();
  if (!f.sha256) return null;
  return (
    <Group gap={4} wrap="nowrap">
      <Tooltip label={t('trace.openHash', { hash: f.sha256 })} multiline w={320}>
        <Anchor component={Link} to={traceLink({ sha256: f.sha256 })} data-testid="trace-hash">
          <Code>{f.sha256.slice(0, SHORT_HASH)}</Code>
        </Anchor>
      </Tooltip>
      {f.partialHash && (
        <Tooltip label={t('trace.partialHash')}>
          <Text size="xs" c="dimmed" aria-label={t('trace.partialHash')}>
            *
          </Text>
        </Tooltip>
      )}
    </Group>
  );
}

function Step({ step, zone, start }: { step: Schemas['EventView']; zone: string | undefined; start: boolean }) {
  const { t } = useTranslation();
  const f = fileDetail(step.detail);
  return (
    <Table.Tr data-testid="trace-step" data-kind={step.kind} bg={start ? 'var(--mantine-color-yellow-light)' : undefined}>
      <Table.Td style={{ whiteSpace: 'nowrap' }}>{preciseTime(step.time, zone)}</Table.Td>
      <Table.Td style={{ maxWidth: 200, overflowWrap: 'anywhere' }}>
        <Anchor component={Link} to={`/devices/${step.device_id}`} size="sm">
          {step.hostname || step.device_id.slice(0, 8)}
        </Anchor>
      </Table.Td>
      <Table.Td style={{ whiteSpace: 'nowrap' }}>{step.os_user}</Table.Td>
      <Table.Td style={{ whiteSpace: 'nowrap' }}>
        <Stack gap={2}>
          <Text size="sm">{t(`kind.${step.kind}`, { defaultValue: step.kind })}</Text>
          {f.summarized > 0 && (
            <Tooltip label={t('trace.summarizedHint')} multiline w={280}>
              <Badge size="xs" variant="light" color="gray" tt="none">
                {t('trace.summarized', { count: f.summarized })}
              </Badge>
            </Tooltip>
          )}
        </Stack>
      </Table.Td>
      <Table.Td style={{ overflowWrap: 'anywhere' }} data-testid="trace-path">
        {step.subject}
        {f.targetPath && (
          <>
            {' → '}
            {f.targetPath}
          </>
        )}
      </Table.Td>
      <Table.Td style={{ minWidth: 160, overflowWrap: 'anywhere' }}>
        {f.exe && <Text size="sm">{f.exe}</Text>}
        {f.pid > 0 && (
          <Text size="xs" c="dimmed">
            {t('trace.pid', { pid: f.pid })}
          </Text>
        )}
      </Table.Td>
      <Table.Td style={{ whiteSpace: 'nowrap' }}>
        <Medium f={f} />
      </Table.Td>
      <Table.Td>
        <Hash f={f} />
      </Table.Td>
    </Table.Tr>
  );
}

/** What the trace starts from, in words. */
function From({ start }: { start: ReturnType<typeof startOf> }) {
  const { t } = useTranslation();
  if (start.sha256) return <Text size="sm">{t('trace.fromHash', { hash: start.sha256.slice(0, SHORT_HASH) })}</Text>;
  if (start.path) return <Text size="sm">{t('trace.fromFile', { path: start.path })}</Text>;
  if (start.event) return <Text size="sm">{t('trace.fromEvent')}</Text>;
  return null;
}

export function FileTrace() {
  const { t } = useTranslation();
  const { isMsp } = useSession();
  const chosen = useTenantChosen(isMsp);
  const [params] = useSearchParams();
  const start = startOf(params);
  const given = Object.keys(start).length > 0;
  const tenant = useQuery({
    queryKey: ['tenant'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['TenantSettings']>('GET', '/api/v1/tenant'),
  });
  const trace = useQuery({
    queryKey: ['file-trace', start],
    enabled: chosen && given,
    queryFn: () => api.call<Schemas['FileTrace']>('GET', '/api/v1/files/trace', { query: start }),
  });
  // Until the tenant's zone is known (or if it cannot be read), the
  // browser's; the column says which.
  const zone = tenant.data?.time_zone;
  const shownZone = zone ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
  const steps = trace.data?.steps ?? [];
  return (
    <Stack>
      <Title order={2}>{t('trace.title')}</Title>
      <Text size="sm" c="dimmed">
        {t('trace.intro')}
      </Text>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <>
          {!given && <Alert color="blue">{t('trace.start')}</Alert>}
          <HashForm />
          {given && <From start={start} />}
        </>
      )}
      {trace.isPending && chosen && given && <Loading />}
      {trace.isError && <Failure error={trace.error} retry={() => void trace.refetch()} />}
      {trace.isSuccess && trace.data.truncated && (
        <Alert color="yellow" data-testid="trace-truncated">
          {t('trace.truncated')}
        </Alert>
      )}
      {trace.isSuccess && steps.length === 0 && (
        <Alert color="gray" data-testid="trace-none">
          {t('trace.none')}
        </Alert>
      )}
      {steps.length > 0 && (
        <>
          <Text size="sm" c="dimmed" data-testid="trace-count">
            {t('trace.count', { count: steps.length })}
          </Text>
          <Table.ScrollContainer minWidth={1100}>
            <Table striped verticalSpacing="xs" data-testid="trace">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th>{t('trace.time', { zone: shownZone })}</Table.Th>
                  <Table.Th>{t('trace.pc')}</Table.Th>
                  <Table.Th>{t('trace.user')}</Table.Th>
                  <Table.Th>{t('trace.action')}</Table.Th>
                  <Table.Th>{t('trace.path')}</Table.Th>
                  <Table.Th>{t('trace.program')}</Table.Th>
                  <Table.Th>{t('trace.medium')}</Table.Th>
                  <Table.Th>{t('trace.content')}</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {steps.map((s) => (
                  <Step key={s.id} step={s} zone={zone} start={s.id === start.event} />
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        </>
      )}
    </Stack>
  );
}
