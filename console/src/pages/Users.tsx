// The tenant's users and invitations: invite (administrator or auditor),
// change a role, disable, withdraw a pending invitation.

import { Alert, Badge, Button, Group, Select, Stack, Switch, Table, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';

const ROLES = ['tenant_admin', 'auditor'] as const;

export function Users() {
  const { t } = useTranslation();
  const { isMsp, canEdit, me } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const users = useQuery({
    queryKey: ['users'],
    enabled: chosen && canEdit,
    queryFn: () => api.call<Schemas['UserView'][]>('GET', '/api/v1/users'),
  });
  const invitations = useQuery({
    queryKey: ['invitations'],
    enabled: chosen && canEdit,
    queryFn: () => api.call<Schemas['PendingInvitationView'][]>('GET', '/api/v1/invitations'),
  });
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<(typeof ROLES)[number]>('auditor');
  const [sent, setSent] = useState<string | null>(null);
  const invite = useSubmit(
    async () => {
      await api.call('POST', '/api/v1/invitations', { body: { email, role } });
      setSent(email);
      setEmail('');
      await queries.invalidateQueries({ queryKey: ['invitations'] });
    },
    ['email', 'role'],
  );
  const update = useMutation({
    mutationFn: ({ id, body }: { id: string; body: Schemas['UpdateUser'] }) =>
      api.call('PATCH', `/api/v1/users/${id}`, { body }),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['users'] }),
  });
  const withdraw = useMutation({
    mutationFn: (id: string) => api.call('POST', `/api/v1/invitations/${id}/revoke`),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['invitations'] }),
  });
  if (!canEdit) {
    return (
      <Stack>
        <Title order={2}>{t('users.title')}</Title>
        <Alert color="gray">{t('app.readOnly')}</Alert>
      </Stack>
    );
  }
  const pending = (invitations.data ?? []).filter((i) => !i.accepted_at && !i.revoked_at && new Date(i.expires_at) > new Date());
  return (
    <Stack>
      <Title order={2}>{t('users.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && (
        <form onSubmit={invite.onSubmit}>
          <Group align="end">
            <TextInput
              label={t('users.inviteEmail')}
              type="email"
              required
              w={300}
              value={email}
              error={invite.fieldError('email')}
              onChange={(e) => setEmail(e.currentTarget.value)}
            />
            <Select
              label={t('users.role')}
              allowDeselect={false}
              value={role}
              data={ROLES.map((r) => ({ value: r, label: t(`role.${r}`) }))}
              onChange={(v) => setRole((v ?? 'auditor') as (typeof ROLES)[number])}
              w={200}
            />
            <Button type="submit" loading={invite.busy}>
              {t('users.invite')}
            </Button>
          </Group>
          <FormError error={invite.error} mt="xs" />
          {sent && (
            <Alert color="teal" mt="xs" data-testid="invited">
              {t('users.invited', { email: sent })}
            </Alert>
          )}
        </form>
      )}
      {(users.isPending || invitations.isPending) && chosen && <Loading />}
      {users.isError && <Failure error={users.error} />}
      {update.isError && <Failure error={update.error} />}
      {withdraw.isError && <Failure error={withdraw.error} />}
      {users.data && (
        <Table striped data-testid="users">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('users.email')}</Table.Th>
              <Table.Th>{t('users.role')}</Table.Th>
              <Table.Th>{t('users.since')}</Table.Th>
              <Table.Th>{t('users.active')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {users.data.map((u) => {
              const self = u.id === me?.id;
              return (
                <Table.Tr key={u.id}>
                  <Table.Td>
                    {u.email} {!u.email_verified && <Badge variant="light" color="gray">{t('users.unconfirmed')}</Badge>}
                  </Table.Td>
                  <Table.Td>
                    {self || !ROLES.includes(u.role as (typeof ROLES)[number]) ? (
                      t(`role.${u.role}`, { defaultValue: u.role })
                    ) : (
                      <Select
                        aria-label={t('users.role')}
                        size="xs"
                        w={180}
                        allowDeselect={false}
                        value={u.role}
                        data={ROLES.map((r) => ({ value: r, label: t(`role.${r}`) }))}
                        onChange={(v) => v && update.mutate({ id: u.id, body: { role: v as Schemas['Role'] } })}
                      />
                    )}
                  </Table.Td>
                  <Table.Td>{dateTime(u.created_at)}</Table.Td>
                  <Table.Td>
                    <Switch
                      aria-label={t('users.active')}
                      checked={!u.disabled}
                      disabled={self}
                      onChange={(e) => update.mutate({ id: u.id, body: { disabled: !e.currentTarget.checked } })}
                    />
                  </Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      )}
      <Title order={3}>{t('users.pending')}</Title>
      {invitations.data && pending.length === 0 && <Text size="sm">{t('users.noPending')}</Text>}
      {pending.length > 0 && (
        <Table data-testid="invitations">
          <Table.Tbody>
            {pending.map((i) => (
              <Table.Tr key={i.id}>
                <Table.Td>{i.email}</Table.Td>
                <Table.Td>{t(`role.${i.role}`, { defaultValue: i.role })}</Table.Td>
                <Table.Td>{t('users.expires', { at: dateTime(i.expires_at) })}</Table.Td>
                <Table.Td>
                  <Button size="compact-xs" variant="subtle" color="red" onClick={() => withdraw.mutate(i.id)}>
                    {t('users.withdraw')}
                  </Button>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
