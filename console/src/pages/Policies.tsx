// Policies of the tenant, a group or a device: the editor, saving a new
// version (the API's refusal shown at the field it names), and the
// version history with a diff between any two versions and "restore".

import { Alert, Badge, Box, Button, Group, Modal, ScrollArea, SegmentedControl, Select, Stack, Table, Text, Title } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { useSearchParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { useDebounced } from '../components/useDebounced';
import { messageAt, useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';
import { diffLines, printDocument } from '../policy/diff';
import { PolicyEditor } from '../policy/Editor';
import type { PolicyDocument } from '../policy/Editor';

type Scope = 'tenant' | 'group' | 'device';

function basePath(scope: Scope, id: string | null): string | null {
  if (scope === 'tenant') return '/api/v1/policies/tenant';
  if (!id) return null;
  return `/api/v1/policies/${scope === 'group' ? 'groups' : 'devices'}/${id}`;
}

/** The policy set at a scope, or null when none ever was (read from the
 * tenant's list, which has every policy, so that "none yet" is no 404). */
async function fetchPolicy(scope: Scope, id: string | null): Promise<Schemas['PolicyView'] | null> {
  const list = await api.call<Schemas['PolicyList']>('GET', '/api/v1/policies');
  return list.policies.find((p) => p.scope === scope && (scope === 'tenant' || p.target_id === id)) ?? null;
}

function DeviceSearch({ value, onChange }: { value: string | null; onChange: (id: string | null) => void }) {
  const { t } = useTranslation();
  const [search, setSearch] = useState('');
  const q = useDebounced(search, 250);
  const devices = useQuery({
    queryKey: ['devices', 'pick', q],
    queryFn: () => api.call<Schemas['DevicePage']>('GET', '/api/v1/devices', { query: { q, limit: 50, status: 'active' } }),
  });
  return (
    <Select
      label={t('policy.deviceLabel')}
      placeholder={t('policy.pickDevice')}
      searchable
      searchValue={search}
      onSearchChange={setSearch}
      filter={({ options }) => options}
      value={value}
      onChange={onChange}
      data={(devices.data?.devices ?? []).map((d) => ({ value: d.id, label: d.hostname }))}
      w={280}
    />
  );
}

function History({ path, current, onRestore }: { path: string; current: number | null; onRestore: (doc: PolicyDocument | null) => void }) {
  const { t } = useTranslation();
  const { canEdit } = useSession();
  const versions = useQuery({
    queryKey: ['policy-versions', path],
    // A scope that never had a policy has no history (and the API says 404).
    enabled: current !== null,
    queryFn: () => api.call<Schemas['VersionView'][]>('GET', `${path}/versions`),
  });
  const [pair, setPair] = useState<[number, number] | null>(null);
  const list = versions.data ?? [];
  const byVersion = new Map(list.map((v) => [v.version, v]));
  const diff = useMemo(() => {
    if (!pair) return null;
    const [a, b] = pair;
    return diffLines(printDocument(byVersion.get(a)?.document), printDocument(byVersion.get(b)?.document));
  }, [pair, versions.data]);
  if (versions.isError) return <Failure error={versions.error} />;
  if (list.length === 0) return null;
  return (
    <Stack gap="xs">
      <Title order={3}>{t('policy.history')}</Title>
      <Table data-testid="versions">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>{t('policy.version')}</Table.Th>
            <Table.Th>{t('policy.savedAt')}</Table.Th>
            <Table.Th />
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {list.map((v, i) => {
            const older = list[i + 1];
            return (
              <Table.Tr key={v.version}>
                <Table.Td>
                  {v.version} {v.version === current && <Badge variant="light">{t('policy.current')}</Badge>}
                  {v.document == null && <Badge variant="light" color="gray">{t('policy.cleared')}</Badge>}
                </Table.Td>
                <Table.Td>{dateTime(v.created_at)}</Table.Td>
                <Table.Td>
                  <Group gap="xs">
                    {older && (
                      <Button size="compact-xs" variant="subtle" onClick={() => setPair([older.version, v.version])}>
                        {t('policy.diffPrevious')}
                      </Button>
                    )}
                    {current !== null && v.version !== current && (
                      <Button size="compact-xs" variant="subtle" onClick={() => setPair([v.version, current])}>
                        {t('policy.diffCurrent')}
                      </Button>
                    )}
                    {canEdit && v.version !== current && (
                      <Button size="compact-xs" variant="light" onClick={() => onRestore((v.document ?? null) as PolicyDocument | null)}>
                        {t('policy.restore')}
                      </Button>
                    )}
                  </Group>
                </Table.Td>
              </Table.Tr>
            );
          })}
        </Table.Tbody>
      </Table>
      {pair && diff && (
        <Modal opened onClose={() => setPair(null)} size="xl" title={t('policy.diffTitle', { a: pair[0], b: pair[1] })}>
          <ScrollArea h={480}>
            <Box component="pre" data-testid="diff" style={{ fontSize: 12, margin: 0 }}>
              {diff.map((l, k) => (
                <Box
                  key={k}
                  component="div"
                  data-kind={l.kind}
                  bg={l.kind === 'added' ? 'teal.1' : l.kind === 'removed' ? 'red.1' : undefined}
                >
                  {l.kind === 'added' ? '+ ' : l.kind === 'removed' ? '- ' : '  '}
                  {l.text}
                </Box>
              ))}
            </Box>
          </ScrollArea>
        </Modal>
      )}
    </Stack>
  );
}

export function Policies() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const [params, setParams] = useSearchParams();
  const scope: Scope = params.get('scope') === 'group' ? 'group' : params.get('scope') === 'device' ? 'device' : 'tenant';
  const target = params.get('id');
  const path = basePath(scope, target);
  const groups = useGroups(chosen);
  const webhooks = useQuery({
    queryKey: ['webhooks'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['WebhookView'][]>('GET', '/api/v1/webhooks'),
  });
  const policy = useQuery({
    queryKey: ['policy', path],
    enabled: chosen && path !== null,
    queryFn: () => fetchPolicy(scope, target),
  });
  const [draft, setDraft] = useState<PolicyDocument>({});
  const [saved, setSaved] = useState<Schemas['SavedView'] | null>(null);
  // The draft follows what is stored; a "saved" notice stays until the
  // scope changes (the reload after saving must not hide it).
  useEffect(() => {
    setDraft(structuredClone(policy.data?.document ?? {}));
  }, [policy.data]);
  useEffect(() => setSaved(null), [path]);
  const submit = useSubmit(async () => {
    if (!path) return;
    setSaved(await api.call<Schemas['SavedView']>('PUT', path, { body: draft }));
    await queries.invalidateQueries({ queryKey: ['policy', path] });
    await queries.invalidateQueries({ queryKey: ['policy-versions', path] });
  });
  // A refusal names a path inside the document (`banned_apps[0].path`):
  // shown at that field, and above the editor in any case.
  const failure = submit.error;
  const refusedField = (path: string): string | undefined => messageAt(failure, path);
  const setScope = (next: Scope, id: string | null = null) => {
    const p = new URLSearchParams();
    if (next !== 'tenant') p.set('scope', next);
    if (id) p.set('id', id);
    setParams(p, { replace: true });
  };
  const [restoreError, setRestoreError] = useState<unknown>(null);
  const restore = async (doc: PolicyDocument | null) => {
    if (!path) return;
    setRestoreError(null);
    try {
      if (doc === null) await api.call('DELETE', path);
      else await api.call('PUT', path, { body: doc });
    } catch (e) {
      setRestoreError(e);
    }
    await queries.invalidateQueries({ queryKey: ['policy', path] });
    await queries.invalidateQueries({ queryKey: ['policy-versions', path] });
  };
  return (
    <Stack>
      <Title order={2}>{t('policy.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <Group align="end">
          <SegmentedControl
            value={scope}
            onChange={(v) => setScope(v as Scope)}
            data={(['tenant', 'group', 'device'] as const).map((s) => ({ value: s, label: t(`policy.scopes.${s}`) }))}
          />
          {scope === 'group' && (
            <Select
              label={t('policy.groupLabel')}
              placeholder={t('policy.pickGroup')}
              value={target}
              onChange={(v) => setScope('group', v)}
              data={groupOptions(groups.data)}
              w={280}
            />
          )}
          {scope === 'device' && <DeviceSearch value={target} onChange={(v) => setScope('device', v)} />}
        </Group>
      )}
      {chosen && path === null && <Text c="dimmed">{t(scope === 'group' ? 'policy.pickGroup' : 'policy.pickDevice')}</Text>}
      {policy.isPending && path !== null && chosen && <Loading />}
      {policy.isError && <Failure error={policy.error} retry={() => void policy.refetch()} />}
      {restoreError !== null && <Failure error={restoreError} />}
      {path !== null && policy.isSuccess && (
        <form onSubmit={submit.onSubmit}>
          <Stack>
            <Text size="sm" c="dimmed" data-testid="policy-version">
              {policy.data
                ? t('policy.versionLine', { version: policy.data.version, at: dateTime(policy.data.updated_at) })
                : t('policy.none')}
            </Text>
            {scope !== 'tenant' && <Alert color="blue">{t('policy.inheritHint')}</Alert>}
            <PolicyEditor
              doc={draft}
              onChange={setDraft}
              err={refusedField}
              readOnly={!canEdit}
              webhooks={(webhooks.data ?? []).map((w) => ({ value: w.id, label: w.name }))}
            />
            {failure && (
              <Alert color="red" role="alert" data-testid="policy-error">
                {failure}
              </Alert>
            )}
            {saved && (
              <Alert color="teal" data-testid="policy-saved">
                {t('policy.saved', { version: saved.version })}
                {saved.awaiting_confirmation.length > 0 && (
                  <Text size="sm">{t('policy.awaiting', { emails: saved.awaiting_confirmation.join(', ') })}</Text>
                )}
              </Alert>
            )}
            {canEdit && (
              <Group>
                <Button type="submit" loading={submit.busy}>
                  {t('policy.save')}
                </Button>
              </Group>
            )}
            <History path={path} current={policy.data?.version ?? null} onRestore={(d) => void restore(d)} />
          </Stack>
        </form>
      )}
    </Stack>
  );
}
