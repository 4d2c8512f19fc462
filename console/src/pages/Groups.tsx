// Offices and departments: the tree, with create, rename, move and delete
// (the API refuses to delete a group that still has devices or
// sub-groups, and says so).

import { Box, Button, Group, Select, Stack, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { groupPaths, useGroups } from '../components/groups';
import type { GroupView } from '../components/groups';
import { useSubmit } from '../components/useSubmit';

/** The groups a group may move under: not itself or its descendants. */
function possibleParents(groups: GroupView[], id: string): { value: string; label: string }[] {
  const below = new Set([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const g of groups) {
      if (g.parent_id && below.has(g.parent_id) && !below.has(g.id)) {
        below.add(g.id);
        grew = true;
      }
    }
  }
  return groupPaths(groups)
    .filter((g) => !below.has(g.id))
    .map((g) => ({ value: g.id, label: g.path }));
}

/** The picker's value for "no parent". */
const TOP = 'top-level';

/** The name and parent inputs both forms share. */
function GroupFields({
  name,
  setName,
  parent,
  setParent,
  parents,
  fieldError,
  nameLabel,
}: {
  name: string;
  setName: (v: string) => void;
  parent: string | null;
  setParent: (v: string | null) => void;
  parents: { value: string; label: string }[];
  fieldError: (f: string) => string | undefined;
  nameLabel: string;
}) {
  const { t } = useTranslation();
  return (
    <>
      <TextInput
        label={nameLabel}
        required
        value={name}
        maxLength={200}
        error={fieldError('name')}
        onChange={(e) => setName(e.currentTarget.value)}
      />
      <Select
        label={t('groups.parent')}
        allowDeselect={false}
        value={parent ?? TOP}
        onChange={(v) => setParent(v === TOP || v === null ? null : v)}
        data={[{ value: TOP, label: t('groups.topLevel') }, ...parents]}
        error={fieldError('parent_id')}
        w={260}
      />
    </>
  );
}

function EditGroup({ group, groups, onDone }: { group: GroupView; groups: GroupView[]; onDone: () => void }) {
  const { t } = useTranslation();
  const queries = useQueryClient();
  const [name, setName] = useState(group.name);
  const [parent, setParent] = useState<string | null>(group.parent_id ?? null);
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      await api.call('PATCH', `/api/v1/groups/${group.id}`, { body: { name, parent_id: parent } });
      await queries.invalidateQueries({ queryKey: ['groups'] });
      onDone();
    },
    ['name', 'parent_id'],
  );
  return (
    <form onSubmit={onSubmit}>
      <Group align="end" gap="xs">
        <GroupFields
          name={name}
          setName={setName}
          parent={parent}
          setParent={setParent}
          parents={possibleParents(groups, group.id)}
          fieldError={fieldError}
          nameLabel={t('groups.name')}
        />
        <Button type="submit" size="sm" loading={busy}>
          {t('app.save')}
        </Button>
        <Button size="sm" variant="subtle" onClick={onDone}>
          {t('app.cancel')}
        </Button>
      </Group>
      <FormError error={error} mt="xs" />
    </form>
  );
}

export function Groups() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const groups = useGroups(chosen);
  const [editing, setEditing] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [parent, setParent] = useState<string | null>(null);
  const create = useSubmit(
    async () => {
      await api.call('POST', '/api/v1/groups', { body: { name, parent_id: parent } });
      setName('');
      setParent(null);
      await queries.invalidateQueries({ queryKey: ['groups'] });
    },
    ['name', 'parent_id'],
  );
  const remove = useMutation({
    mutationFn: (id: string) => api.call<unknown>('DELETE', `/api/v1/groups/${id}`),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['groups'] }),
  });
  const list = groups.data ?? [];
  const byId = new Map(list.map((g) => [g.id, g]));
  return (
    <Stack>
      <Title order={2}>{t('groups.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && canEdit && (
        <form onSubmit={create.onSubmit}>
          <Group align="end">
            <GroupFields
              name={name}
              setName={setName}
              parent={parent}
              setParent={setParent}
              parents={groupPaths(list).map((g) => ({ value: g.id, label: g.path }))}
              fieldError={create.fieldError}
              nameLabel={t('groups.newName')}
            />
            <Button type="submit" loading={create.busy}>
              {t('groups.create')}
            </Button>
          </Group>
          <FormError error={create.error} mt="xs" />
        </form>
      )}
      {groups.isPending && chosen && <Loading />}
      {groups.isError && <Failure error={groups.error} retry={() => void groups.refetch()} />}
      {remove.isError && <Failure error={remove.error} />}
      {groups.data && list.length === 0 && <Text>{t('groups.empty')}</Text>}
      <Stack gap={4} data-testid="groups">
        {groupPaths(list).map(({ id, depth }) => {
          const g = byId.get(id);
          if (!g) return null;
          return (
            <Box key={id} pl={depth * 24} data-testid="group-row">
              {editing === id ? (
                <EditGroup group={g} groups={list} onDone={() => setEditing(null)} />
              ) : (
                <Group gap="xs">
                  <Text fw={depth === 0 ? 600 : 400}>{g.name}</Text>
                  {canEdit && (
                    <>
                      <Button size="compact-xs" variant="subtle" onClick={() => setEditing(id)}>
                        {t('groups.edit')}
                      </Button>
                      <Button
                        size="compact-xs"
                        variant="subtle"
                        color="red"
                        loading={remove.isPending && remove.variables === id}
                        onClick={() => remove.mutate(id)}
                      >
                        {t('app.delete')}
                      </Button>
                    </>
                  )}
                </Group>
              )}
            </Box>
          );
        })}
      </Stack>
    </Stack>
  );
}
