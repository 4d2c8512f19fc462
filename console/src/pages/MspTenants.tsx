// The tenants an MSP runs: devices against the licence, open alarms and
// the last violation per tenant; open one (the tenant switcher follows),
// create one (its first enrollment token shown once), take one over with
// its administrator's handover code, release one.

import { Alert, Badge, Button, Card, Code, CopyButton, Group, Modal, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { useNavigate, useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { Failure, FormError, Loading } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';

function Created({ created, onClose }: { created: { name: string } & Schemas['CreatedTenant']; onClose: () => void }) {
  const { t } = useTranslation();
  return (
    <Modal opened onClose={onClose} size="lg" title={t('msp.created', { name: created.name })}>
      <Stack>
        <Alert color="yellow">{t('msp.tokenOnce')}</Alert>
        <Code block data-testid="tenant-token">
          {created.enrollment_token}
        </Code>
        <Group>
          <CopyButton value={created.enrollment_token}>
            {({ copied, copy }) => (
              <Button variant="light" onClick={copy}>
                {copied ? t('app.copied') : t('enrollment.copyToken')}
              </Button>
            )}
          </CopyButton>
          <Button onClick={onClose}>{t('app.done')}</Button>
        </Group>
      </Stack>
    </Modal>
  );
}

export function MspTenants() {
  const { t } = useTranslation();
  const { may, me } = useSession();
  const admin = may('manage_org');
  const [params] = useSearchParams();
  const welcome = params.get('welcome') === '1' && me && !me.email_verified;
  const queries = useQueryClient();
  const navigate = useNavigate();
  const tenants = useQuery({
    queryKey: ['tenants'],
    queryFn: () => api.call<Schemas['TenantSummary'][]>('GET', '/api/v1/tenants', { tenant: false }),
  });
  const [name, setName] = useState('');
  const [created, setCreated] = useState<({ name: string } & Schemas['CreatedTenant']) | null>(null);
  const create = useSubmit(
    async () => {
      const answer = await api.call<Schemas['CreatedTenant']>('POST', '/api/v1/tenants', { body: { name }, tenant: false });
      setCreated({ name, ...answer });
      setName('');
      await queries.invalidateQueries({ queryKey: ['tenants'] });
    },
    ['name'],
  );
  const [code, setCode] = useState('');
  const [claimed, setClaimed] = useState<string | null>(null);
  const claim = useSubmit(
    async () => {
      setClaimed(null);
      const answer = await api.call<Schemas['TenantSummary']>('POST', '/api/v1/tenants/claim', { body: { code: code.trim() }, tenant: false });
      setClaimed(answer.name);
      setCode('');
      await queries.invalidateQueries({ queryKey: ['tenants'] });
    },
    ['code'],
  );
  const [releasing, setReleasing] = useState<Schemas['TenantSummary'] | null>(null);
  const release = useMutation({
    mutationFn: (id: string) => api.call('POST', `/api/v1/tenants/${id}/release`, { tenant: false }),
    onSuccess: async (_, id) => {
      if (api.getActingTenant() === id) api.setActingTenant(null);
      setReleasing(null);
      await queries.invalidateQueries({ queryKey: ['tenants'] });
    },
  });
  const open = (id: string) => {
    api.setActingTenant(id);
    void queries.resetQueries();
    void navigate('/');
  };
  return (
    <Stack>
      <Title order={2}>{t('msp.title')}</Title>
      {welcome && <Alert color="blue">{t('auth.checkMail', { email: me.email })}</Alert>}
      {tenants.isPending && <Loading />}
      {tenants.isError && <Failure error={tenants.error} retry={() => void tenants.refetch()} />}
      {tenants.data && tenants.data.length === 0 && <Text c="dimmed">{t('msp.none')}</Text>}
      {tenants.data && tenants.data.length > 0 && (
        <Table striped highlightOnHover data-testid="tenants">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('msp.name')}</Table.Th>
              <Table.Th>{t('msp.devices')}</Table.Th>
              <Table.Th>{t('msp.openAlarms')}</Table.Th>
              <Table.Th>{t('msp.lastViolation')}</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {tenants.data.map((x) => (
              <Table.Tr key={x.id} data-tenant={x.name}>
                <Table.Td>{x.name}</Table.Td>
                <Table.Td>
                  {x.devices} / {x.device_limit}
                </Table.Td>
                <Table.Td>
                  <Badge color={x.open_alarms > 0 ? 'red' : 'gray'} variant="light" data-testid="open-alarms">
                    {x.open_alarms}
                  </Badge>
                </Table.Td>
                <Table.Td data-testid="last-violation">{x.last_alarm_at ? dateTime(x.last_alarm_at) : t('msp.never')}</Table.Td>
                <Table.Td>
                  <Group gap="xs" justify="end">
                    <Button size="compact-sm" variant="light" onClick={() => open(x.id)}>
                      {t('msp.open')}
                    </Button>
                    {admin && (
                      <Button size="compact-sm" variant="subtle" color="red" onClick={() => setReleasing(x)}>
                        {t('msp.release')}
                      </Button>
                    )}
                  </Group>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      {releasing && (
        <Modal opened onClose={() => setReleasing(null)} title={t('msp.releaseTitle', { name: releasing.name })}>
          <Stack>
            <Text size="sm">{t('msp.releaseText')}</Text>
            {release.isError && <Failure error={release.error} />}
            <Group justify="end">
              <Button variant="subtle" onClick={() => setReleasing(null)}>
                {t('app.cancel')}
              </Button>
              <Button color="red" loading={release.isPending} onClick={() => release.mutate(releasing.id)} data-testid="confirm">
                {t('msp.release')}
              </Button>
            </Group>
          </Stack>
        </Modal>
      )}
      {admin && (
        <Group align="start" grow>
          <Card withBorder>
            <form onSubmit={create.onSubmit}>
              <Stack gap="xs">
                <Title order={4}>{t('msp.create')}</Title>
                <TextInput
                  label={t('msp.company')}
                  required
                  value={name}
                  error={create.fieldError('name')}
                  onChange={(e) => setName(e.currentTarget.value)}
                />
                <FormError error={create.error} />
                <Button type="submit" w="fit-content" loading={create.busy}>
                  {t('msp.create')}
                </Button>
              </Stack>
            </form>
          </Card>
          <Card withBorder>
            <form onSubmit={claim.onSubmit}>
              <Stack gap="xs">
                <Title order={4}>{t('msp.claim')}</Title>
                <TextInput
                  label={t('msp.code')}
                  description={t('msp.codeHint')}
                  required
                  value={code}
                  error={claim.fieldError('code')}
                  onChange={(e) => setCode(e.currentTarget.value)}
                />
                <FormError error={claim.error} />
                {claimed && (
                  <Alert color="teal" data-testid="claimed">
                    {t('msp.claimed', { name: claimed })}
                  </Alert>
                )}
                <Button type="submit" w="fit-content" loading={claim.busy}>
                  {t('msp.claim')}
                </Button>
              </Stack>
            </form>
          </Card>
        </Group>
      )}
      {created && <Created created={created} onClose={() => setCreated(null)} />}
    </Stack>
  );
}
