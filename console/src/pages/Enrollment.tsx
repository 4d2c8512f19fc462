// Enrollment tokens: create one (lifetime, uses, group), see the install
// command once with a copy button, list and revoke.

import { Alert, Badge, Button, Code, CopyButton, Group, Modal, NumberInput, Select, Stack, Table, Text, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { groupOptions, useGroups } from '../components/groups';
import { useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';

const LIFETIMES = ['1d', '7d', '30d', '90d', 'never'] as const;

function status(tok: Schemas['TokenView']): 'revoked' | 'expired' | 'used_up' | 'active' {
  if (tok.revoked_at) return 'revoked';
  if (tok.expires_at && new Date(tok.expires_at) < new Date()) return 'expired';
  if (tok.max_uses != null && tok.uses >= tok.max_uses) return 'used_up';
  return 'active';
}

function Created({ created, onClose }: { created: Schemas['CreatedTokenView']; onClose: () => void }) {
  const { t } = useTranslation();
  return (
    <Modal opened onClose={onClose} title={t('enrollment.createdTitle')} size="xl">
      <Stack>
        <Alert color="yellow">{t('enrollment.shownOnce')}</Alert>
        <Text size="sm" fw={500}>
          {t('enrollment.installLinux')}
        </Text>
        <Code block data-testid="install-command">
          {created.install_command}
        </Code>
        <Group>
          <CopyButton value={created.install_command}>
            {({ copied, copy }) => (
              <Button variant="light" onClick={copy}>
                {copied ? t('app.copied') : t('enrollment.copyCommand')}
              </Button>
            )}
          </CopyButton>
          <CopyButton value={created.token}>
            {({ copied, copy }) => (
              <Button variant="subtle" onClick={copy}>
                {copied ? t('app.copied') : t('enrollment.copyToken')}
              </Button>
            )}
          </CopyButton>
        </Group>
        <Text size="sm" c="dimmed">
          {t('enrollment.token')}: <Code data-testid="enrollment-token">{created.token}</Code>
        </Text>
        <Button onClick={onClose}>{t('app.done')}</Button>
      </Stack>
    </Modal>
  );
}

export function Enrollment() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const groups = useGroups(chosen);
  const tokens = useQuery({
    queryKey: ['enrollment-tokens'],
    enabled: chosen && canEdit,
    queryFn: () => api.call<Schemas['TokenView'][]>('GET', '/api/v1/enrollment-tokens'),
  });
  const [lifetime, setLifetime] = useState<string>('30d');
  const [maxUses, setMaxUses] = useState<number | string>('');
  const [group, setGroup] = useState<string | null>(null);
  const [created, setCreated] = useState<Schemas['CreatedTokenView'] | null>(null);
  const [revoking, setRevoking] = useState<string | null>(null);
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      const body: Schemas['CreateToken'] = {
        expires: lifetime === 'never' ? null : lifetime,
        max_uses: maxUses === '' ? null : Number(maxUses),
        group_id: group,
      };
      setCreated(await api.call<Schemas['CreatedTokenView']>('POST', '/api/v1/enrollment-tokens', { body }));
      await queries.invalidateQueries({ queryKey: ['enrollment-tokens'] });
    },
    ['expires', 'max_uses', 'group_id'],
  );
  const revoke = useMutation({
    mutationFn: (id: string) => api.call<unknown>('POST', `/api/v1/enrollment-tokens/${id}/revoke`),
    onSuccess: () => {
      setRevoking(null);
      void queries.invalidateQueries({ queryKey: ['enrollment-tokens'] });
    },
  });
  const groupName = new Map(groupOptions(groups.data).map((g) => [g.value, g.label]));

  if (!canEdit) {
    return (
      <Stack>
        <Title order={2}>{t('enrollment.title')}</Title>
        <Alert color="gray">{t('app.readOnly')}</Alert>
      </Stack>
    );
  }
  return (
    <Stack>
      <Title order={2}>{t('enrollment.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <form onSubmit={onSubmit}>
          <Group align="end">
            <Select
              label={t('enrollment.lifetime')}
              value={lifetime}
              onChange={(v) => setLifetime(v ?? '30d')}
              data={LIFETIMES.map((l) => ({ value: l, label: t(`enrollment.lifetimes.${l}`) }))}
              error={fieldError('expires')}
              allowDeselect={false}
              w={160}
            />
            <NumberInput
              label={t('enrollment.maxUses')}
              placeholder={t('enrollment.unlimited')}
              min={1}
              max={100000}
              value={maxUses}
              onChange={setMaxUses}
              error={fieldError('max_uses')}
              w={160}
            />
            <Select
              label={t('enrollment.group')}
              placeholder={t('enrollment.noGroup')}
              clearable
              value={group}
              onChange={setGroup}
              data={groupOptions(groups.data)}
              error={fieldError('group_id')}
              w={260}
            />
            <Button type="submit" loading={busy}>
              {t('enrollment.create')}
            </Button>
          </Group>
          <FormError error={error} mt="sm" />
        </form>
      )}
      {created && <Created created={created} onClose={() => setCreated(null)} />}
      {tokens.isPending && chosen && <Loading />}
      {tokens.isError && <Failure error={tokens.error} retry={() => void tokens.refetch()} />}
      {revoke.isError && <Failure error={revoke.error} />}
      {tokens.data && tokens.data.length === 0 && <Text>{t('enrollment.empty')}</Text>}
      {tokens.data && tokens.data.length > 0 && (
        <Table striped data-testid="tokens">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('enrollment.created')}</Table.Th>
              <Table.Th>{t('enrollment.expires')}</Table.Th>
              <Table.Th>{t('enrollment.uses')}</Table.Th>
              <Table.Th>{t('enrollment.group')}</Table.Th>
              <Table.Th>{t('enrollment.status')}</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {[...tokens.data].reverse().map((tok) => {
              const s = status(tok);
              return (
                <Table.Tr key={tok.id}>
                  <Table.Td>{dateTime(tok.created_at)}</Table.Td>
                  <Table.Td>{tok.expires_at ? dateTime(tok.expires_at) : t('enrollment.lifetimes.never')}</Table.Td>
                  <Table.Td>
                    {tok.uses}
                    {tok.max_uses != null ? ` / ${tok.max_uses}` : ''}
                  </Table.Td>
                  <Table.Td>{tok.group_id ? (groupName.get(tok.group_id) ?? '') : ''}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={s === 'active' ? 'teal' : 'gray'}>
                      {t(`enrollment.statuses.${s}`)}
                    </Badge>
                  </Table.Td>
                  <Table.Td>
                    {s === 'active' &&
                      (revoking === tok.id ? (
                        <Group gap="xs">
                          <Button size="xs" color="red" loading={revoke.isPending} onClick={() => revoke.mutate(tok.id)}>
                            {t('enrollment.confirmRevoke')}
                          </Button>
                          <Button size="xs" variant="subtle" onClick={() => setRevoking(null)}>
                            {t('app.cancel')}
                          </Button>
                        </Group>
                      ) : (
                        <Button size="xs" variant="light" color="red" onClick={() => setRevoking(tok.id)}>
                          {t('enrollment.revoke')}
                        </Button>
                      ))}
                  </Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
