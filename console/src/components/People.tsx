// Users and invitations, as a tenant's administrators and an MSP's see
// them: the invitation form, the user table (role, active) and the
// pending invitations. The pages say which roles and which endpoints.

import { Alert, Badge, Button, Group, Select, Stack, Switch, Table, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import type { ReactNode } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { dateTime } from '../format';
import { Failure, FormError, Loading } from './Feedback';
import { useSubmit } from './useSubmit';

type Role = Schemas['Role'];

interface Scope {
  /** `/api/v1` or `/api/v1/org`. */
  base: string;
  /** Whether calls name the acting tenant (a tenant's people) or not
   * (an MSP's own). */
  tenant: boolean;
  /** The roles that may be given here; the first is the default. */
  roles: readonly [Role, ...Role[]];
  enabled: boolean;
}

/** A column a page adds to the user table (an MSP technician's tenants). */
interface Extra {
  header: string;
  cell: (user: Schemas['UserView']) => ReactNode;
}

export function People({ scope, extra, loading }: { scope: Scope; extra?: Extra; loading?: boolean }) {
  const { t } = useTranslation();
  const { me } = useSession();
  const queries = useQueryClient();
  const opts = scope.tenant ? {} : { tenant: false };
  const usersKey = ['users', scope.base];
  const invitationsKey = ['invitations', scope.base];
  const users = useQuery({
    queryKey: usersKey,
    enabled: scope.enabled,
    queryFn: () => api.call<Schemas['UserView'][]>('GET', `${scope.base}/users`, opts),
  });
  const invitations = useQuery({
    queryKey: invitationsKey,
    enabled: scope.enabled,
    queryFn: () => api.call<Schemas['PendingInvitationView'][]>('GET', `${scope.base}/invitations`, opts),
  });
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>(scope.roles[0]);
  const [sent, setSent] = useState<string | null>(null);
  const invite = useSubmit(
    async () => {
      await api.call('POST', `${scope.base}/invitations`, { ...opts, body: { email, role } });
      setSent(email);
      setEmail('');
      await queries.invalidateQueries({ queryKey: invitationsKey });
    },
    ['email', 'role'],
  );
  const update = useMutation({
    mutationFn: ({ id, body }: { id: string; body: Schemas['UpdateUser'] }) =>
      api.call('PATCH', `${scope.base}/users/${id}`, { ...opts, body }),
    onSuccess: () => void queries.invalidateQueries({ queryKey: usersKey }),
  });
  const withdraw = useMutation({
    mutationFn: (id: string) => api.call('POST', `${scope.base}/invitations/${id}/revoke`, opts),
    onSuccess: () => void queries.invalidateQueries({ queryKey: invitationsKey }),
  });
  if (!scope.enabled) return null;
  const roleOptions = scope.roles.map((r) => ({ value: r, label: t(`role.${r}`) }));
  const pending = (invitations.data ?? []).filter((i) => !i.accepted_at && !i.revoked_at && new Date(i.expires_at) > new Date());
  return (
    <Stack>
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
            data={roleOptions}
            onChange={(v) => setRole((v ?? scope.roles[0]) as Role)}
            w={220}
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
      {(users.isPending || invitations.isPending || loading) && <Loading />}
      {users.isError && <Failure error={users.error} />}
      {update.isError && <Failure error={update.error} />}
      {withdraw.isError && <Failure error={withdraw.error} />}
      {users.data && !loading && (
        <Table striped data-testid="users">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('users.email')}</Table.Th>
              <Table.Th>{t('users.role')}</Table.Th>
              {extra && <Table.Th>{extra.header}</Table.Th>}
              <Table.Th>{t('users.since')}</Table.Th>
              <Table.Th>{t('users.active')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {users.data.map((u) => {
              const self = u.id === me?.id;
              return (
                <Table.Tr key={u.id} data-user={u.email}>
                  <Table.Td>
                    {u.email} {!u.email_verified && <Badge variant="light" color="gray">{t('users.unconfirmed')}</Badge>}
                  </Table.Td>
                  <Table.Td>
                    {self || !scope.roles.includes(u.role as Role) ? (
                      t(`role.${u.role}`, { defaultValue: u.role })
                    ) : (
                      <Select
                        aria-label={t('users.role')}
                        size="xs"
                        w={200}
                        allowDeselect={false}
                        value={u.role}
                        data={roleOptions}
                        onChange={(v) => v && update.mutate({ id: u.id, body: { role: v as Role } })}
                      />
                    )}
                  </Table.Td>
                  {extra && <Table.Td>{extra.cell(u)}</Table.Td>}
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
