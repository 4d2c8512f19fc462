// Webhooks alarms can be routed to: add one (its signing secret shown
// once), send a test delivery, delete. Auditors see the list with the
// URLs cut to scheme and host (the API does that).

import { Alert, Button, Code, CopyButton, Group, Modal, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen, FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { dateTime } from '../format';

export function Webhooks() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const hooks = useQuery({
    queryKey: ['webhooks'],
    enabled: chosen,
    queryFn: () => api.call<Schemas['WebhookView'][]>('GET', '/api/v1/webhooks'),
  });
  const [name, setName] = useState('');
  const [url, setUrl] = useState('');
  const [created, setCreated] = useState<Schemas['CreatedWebhook'] | null>(null);
  const [results, setResults] = useState<Record<string, Schemas['WebhookTestResult']>>({});
  const create = useSubmit(
    async () => {
      setCreated(await api.call<Schemas['CreatedWebhook']>('POST', '/api/v1/webhooks', { body: { name, url } }));
      setName('');
      setUrl('');
      await queries.invalidateQueries({ queryKey: ['webhooks'] });
    },
    ['name', 'url'],
  );
  const test = useMutation({
    mutationFn: (id: string) => api.call<Schemas['WebhookTestResult']>('POST', `/api/v1/webhooks/${id}/test`),
    onSuccess: (r, id) => setResults((all) => ({ ...all, [id]: r })),
  });
  const remove = useMutation({
    mutationFn: (id: string) => api.call('DELETE', `/api/v1/webhooks/${id}`),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ['webhooks'] }),
  });
  return (
    <Stack>
      <Title order={2}>{t('webhooks.title')}</Title>
      {!chosen && <ChooseTenant />}
      {chosen && canEdit && (
        <form onSubmit={create.onSubmit}>
          <Group align="end">
            <TextInput label={t('webhooks.name')} required maxLength={200} value={name} error={create.fieldError('name')} onChange={(e) => setName(e.currentTarget.value)} />
            <TextInput
              label={t('webhooks.url')}
              placeholder="https://hooks.slack.com/services/…"
              required
              w={420}
              value={url}
              error={create.fieldError('url')}
              onChange={(e) => setUrl(e.currentTarget.value)}
            />
            <Button type="submit" loading={create.busy}>
              {t('webhooks.add')}
            </Button>
          </Group>
          <FormError error={create.error} mt="xs" />
        </form>
      )}
      {created && (
        <Modal opened onClose={() => setCreated(null)} title={t('webhooks.createdTitle', { name: created.name })} size="lg">
          <Stack>
            <Alert color="yellow">{t('webhooks.secretOnce')}</Alert>
            <Code block data-testid="webhook-secret">
              {created.secret}
            </Code>
            <Group>
              <CopyButton value={created.secret}>
                {({ copied, copy }) => (
                  <Button variant="light" onClick={copy}>
                    {copied ? t('app.copied') : t('webhooks.copySecret')}
                  </Button>
                )}
              </CopyButton>
              <Button onClick={() => setCreated(null)}>{t('app.done')}</Button>
            </Group>
          </Stack>
        </Modal>
      )}
      {hooks.isPending && chosen && <Loading />}
      {hooks.isError && <Failure error={hooks.error} />}
      {test.isError && <Failure error={test.error} />}
      {remove.isError && <Failure error={remove.error} />}
      {hooks.data && hooks.data.length === 0 && <Text size="sm">{t('webhooks.empty')}</Text>}
      {hooks.data && hooks.data.length > 0 && (
        <Table striped data-testid="webhooks">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t('webhooks.name')}</Table.Th>
              <Table.Th>{t('webhooks.url')}</Table.Th>
              <Table.Th>{t('webhooks.created')}</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {hooks.data.map((h) => {
              const r = results[h.id];
              return (
                <Table.Tr key={h.id}>
                  <Table.Td>{h.name}</Table.Td>
                  <Table.Td>
                    <Text size="sm" style={{ wordBreak: 'break-all' }}>
                      {h.url}
                    </Text>
                  </Table.Td>
                  <Table.Td>{dateTime(h.created_at)}</Table.Td>
                  <Table.Td>
                    {canEdit && (
                      <Stack gap={4}>
                        <Group gap="xs">
                          <Button size="compact-xs" variant="light" loading={test.isPending && test.variables === h.id} onClick={() => test.mutate(h.id)}>
                            {t('webhooks.test')}
                          </Button>
                          <Button size="compact-xs" variant="subtle" color="red" onClick={() => remove.mutate(h.id)}>
                            {t('app.delete')}
                          </Button>
                        </Group>
                        {r && (
                          <Text size="xs" c={r.delivered ? 'teal' : 'red'} data-testid="webhook-test-result">
                            {r.delivered ? t('webhooks.delivered', { status: r.status }) : (r.error ?? '')}
                          </Text>
                        )}
                      </Stack>
                    )}
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
