// The MSP's policy templates: write one with the same editor as a tenant
// policy, apply it to many tenants at once (it becomes each one's tenant
// policy), and see which tenants have drifted from it since.

import { Alert, Badge, Button, Card, Group, MultiSelect, Select, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { Failure, Loading } from '../components/Feedback';
import { messageAt, useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';
import { PolicyEditor } from '../policy/Editor';
import type { PolicyDocument } from '../policy/Editor';

const NEW = 'new';
const DRIFT_COLOR: Record<string, string> = { in_sync: 'teal', outdated: 'yellow', modified: 'orange', not_applied: 'gray' };

function Drift({ template }: { template: Schemas['TemplateView'] }) {
  const { t } = useTranslation();
  const drift = useQuery({
    queryKey: ['drift', template.id, template.version],
    queryFn: () => api.call<Schemas['DriftView'][]>('GET', `/api/v1/org/policy-templates/${template.id}/drift`, { tenant: false }),
  });
  return (
    <Card withBorder>
      <Stack gap="xs">
        <Title order={4}>{t('templates.drift')}</Title>
        {drift.isPending && <Loading />}
        {drift.isError && <Failure error={drift.error} retry={() => void drift.refetch()} />}
        {drift.data && (
          <Table data-testid="drift">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>{t('msp.name')}</Table.Th>
                <Table.Th>{t('templates.status')}</Table.Th>
                <Table.Th>{t('templates.appliedVersion')}</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {drift.data.map((d) => (
                <Table.Tr key={d.tenant_id} data-tenant={d.name}>
                  <Table.Td>{d.name}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={DRIFT_COLOR[d.status] ?? 'gray'} data-status={d.status}>
                      {t(`templates.states.${d.status}`, { defaultValue: d.status })}
                    </Badge>
                  </Table.Td>
                  <Table.Td>
                    {d.applied_version ?? '—'} / {d.template_version}
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
      </Stack>
    </Card>
  );
}

function Apply({ template }: { template: Schemas['TemplateView'] }) {
  const { t } = useTranslation();
  const queries = useQueryClient();
  const tenants = useQuery({
    queryKey: ['tenants'],
    queryFn: () => api.call<Schemas['TenantSummary'][]>('GET', '/api/v1/tenants', { tenant: false }),
  });
  const [chosen, setChosen] = useState<string[]>([]);
  const apply = useMutation({
    mutationFn: () =>
      api.call<Schemas['Applied'][]>('POST', `/api/v1/org/policy-templates/${template.id}/apply`, {
        body: { tenant_ids: chosen },
        tenant: false,
      }),
    onSuccess: async () => {
      setChosen([]);
      await queries.invalidateQueries({ queryKey: ['drift', template.id] });
      await queries.invalidateQueries({ queryKey: ['policy'] });
    },
  });
  return (
    <Card withBorder>
      <Stack gap="xs">
        <Title order={4}>{t('templates.apply')}</Title>
        <Text size="sm" c="dimmed">
          {t('templates.applyHint')}
        </Text>
        <Group align="end">
          <MultiSelect
            label={t('templates.tenants')}
            w={420}
            searchable
            data={(tenants.data ?? []).map((x) => ({ value: x.id, label: x.name }))}
            value={chosen}
            onChange={setChosen}
          />
          <Button
            variant="light"
            onClick={() => setChosen((tenants.data ?? []).map((x) => x.id))}
            disabled={!tenants.data || tenants.data.length === 0}
          >
            {t('templates.all')}
          </Button>
          <Button disabled={chosen.length === 0} loading={apply.isPending} onClick={() => apply.mutate()} data-testid="apply">
            {t('templates.applyTo', { count: chosen.length })}
          </Button>
        </Group>
        {apply.isError && <Failure error={apply.error} />}
        {apply.data && (
          <Alert color="teal" data-testid="applied">
            {t('templates.applied', { count: apply.data.length, version: template.version })}
          </Alert>
        )}
      </Stack>
    </Card>
  );
}

export function MspTemplates() {
  const { t } = useTranslation();
  const { may } = useSession();
  const admin = may('manage_org');
  const queries = useQueryClient();
  const [params, setParams] = useSearchParams();
  const selected = params.get('id');
  const templates = useQuery({
    queryKey: ['templates'],
    enabled: admin,
    queryFn: () => api.call<Schemas['TemplateView'][]>('GET', '/api/v1/org/policy-templates', { tenant: false }),
  });
  const current = templates.data?.find((x) => x.id === selected) ?? null;
  const [name, setName] = useState('');
  const [draft, setDraft] = useState<PolicyDocument>({});
  const [saved, setSaved] = useState<{ id: string; version: number } | null>(null);
  useEffect(() => {
    setName(current?.name ?? '');
    setDraft(structuredClone((current?.document as PolicyDocument | undefined) ?? {}));
  }, [current]);
  const choose = (id: string | null) => setParams(id ? { id } : {}, { replace: true });
  const submit = useSubmit(async () => {
    setSaved(null);
    const body = { name, document: draft };
    const answer =
      selected === NEW || !current
        ? await api.call<Schemas['TemplateView']>('POST', '/api/v1/org/policy-templates', { body, tenant: false })
        : await api.call<Schemas['TemplateView']>('PUT', `/api/v1/org/policy-templates/${current.id}`, { body, tenant: false });
    await queries.invalidateQueries({ queryKey: ['templates'] });
    setSaved({ id: answer.id, version: answer.version });
    if (selected === NEW) choose(answer.id);
  });
  // A refusal names `name` or a path inside the document
  // (`document.banned_apps[0].path`): shown at that field.
  const failure = submit.error;
  const nameError = messageAt(failure, 'name');
  const refusedField = (path: string): string | undefined => messageAt(failure, `document.${path}`);
  if (!admin) {
    return (
      <Stack>
        <Title order={2}>{t('templates.title')}</Title>
        <Alert color="gray">{t('app.readOnly')}</Alert>
      </Stack>
    );
  }
  return (
    <Stack>
      <Title order={2}>{t('templates.title')}</Title>
      {templates.isPending && <Loading />}
      {templates.isError && <Failure error={templates.error} retry={() => void templates.refetch()} />}
      {templates.data && (
        <Group align="end">
          <Select
            label={t('templates.template')}
            placeholder={templates.data.length === 0 ? t('templates.none') : t('templates.pick')}
            w={320}
            value={current ? current.id : null}
            data={templates.data.map((x) => ({ value: x.id, label: `${x.name} (v${x.version})` }))}
            onChange={choose}
          />
          <Button variant="light" onClick={() => choose(NEW)}>
            {t('templates.new')}
          </Button>
        </Group>
      )}
      {(selected === NEW || current) && (
        <form onSubmit={submit.onSubmit}>
          <Stack>
            {current && (
              <Text size="sm" c="dimmed" data-testid="template-version">
                {t('policy.versionLine', { version: current.version, at: dateTime(current.updated_at) })}
              </Text>
            )}
            <TextInput
              label={t('templates.name')}
              required
              maw={420}
              value={name}
              error={nameError}
              onChange={(e) => setName(e.currentTarget.value)}
            />
            <PolicyEditor key={selected ?? ''} doc={draft} onChange={setDraft} err={refusedField} readOnly={false} webhooks={[]} />
            {failure && (
              <Alert color="red" role="alert" data-testid="template-error">
                {failure}
              </Alert>
            )}
            {saved !== null && saved.id === current?.id && (
              <Alert color="teal" data-testid="template-saved">
                {t('templates.saved', { version: saved.version })}
              </Alert>
            )}
            <Group>
              <Button type="submit" loading={submit.busy}>
                {t('policy.save')}
              </Button>
            </Group>
          </Stack>
        </form>
      )}
      {current && <Apply template={current} />}
      {current && <Drift template={current} />}
    </Stack>
  );
}
