// One alarm with its device's operation log from 5 minutes before to 5
// minutes after, loaded a page at a time; the page says when more follows.
// A confidential-folder alarm links to the trace of its file.

import { Alert, Badge, Button, Group, Stack, Text, Title } from '@mantine/core';
import { useInfiniteQuery, useMutation, useQueryClient } from '@tanstack/react-query';
import { useCallback } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useParams } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { ChooseTenant, Failure, Loading, useTenantChosen } from '../components/Feedback';
import { EventTable } from '../events/EventTable';
import { traceRoute } from '../events/fileTrace';
import { dateTime } from '../format';

export function AlarmDetail() {
  const { t } = useTranslation();
  const { id = '' } = useParams();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  const queries = useQueryClient();
  const context = useInfiniteQuery({
    queryKey: ['alarm-context', id],
    enabled: chosen,
    initialPageParam: undefined as string | undefined,
    queryFn: ({ pageParam }) =>
      api.call<Schemas['AlarmContext']>('GET', `/api/v1/alarms/${id}/context`, { query: { limit: 500, cursor: pageParam } }),
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
  const acknowledge = useMutation({
    mutationFn: () => api.call<unknown>('POST', `/api/v1/alarms/${id}/acknowledge`),
    onSuccess: () => {
      void queries.invalidateQueries({ queryKey: ['alarm-context', id] });
      void queries.invalidateQueries({ queryKey: ['alarms'] });
    },
  });
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = context;
  const loadMore = useCallback(() => void fetchNextPage(), [fetchNextPage]);
  const first = context.data?.pages[0];
  const alarm = first?.alarm;
  const events = context.data?.pages.flatMap((p) => p.events) ?? [];
  const trace = alarm?.file_trace ? traceRoute(alarm.file_trace) : null;
  return (
    <Stack>
      <Group>
        <Link to="/alarms">{t('alarms.back')}</Link>
      </Group>
      {!chosen && <ChooseTenant />}
      {context.isPending && chosen && <Loading />}
      {context.isError && <Failure error={context.error} retry={() => void context.refetch()} />}
      {acknowledge.isError && <Failure error={acknowledge.error} />}
      {alarm && (
        <>
          <Group justify="space-between">
            <Title order={2} data-testid="alarm-title">
              {t(`category.${alarm.category}`, { defaultValue: alarm.category })}
            </Title>
            <Group>
              <Badge variant="light" color={alarm.status === 'open' ? 'red' : 'gray'}>
                {t(alarm.status === 'open' ? 'alarms.open' : 'alarms.acknowledged')}
              </Badge>
              {canEdit && alarm.status === 'open' && (
                <Button size="xs" loading={acknowledge.isPending} onClick={() => acknowledge.mutate()}>
                  {t('alarms.acknowledge')}
                </Button>
              )}
            </Group>
          </Group>
          <Text data-testid="alarm-summary">{alarm.summary}</Text>
          {trace && (
            <Button component={Link} to={trace} variant="light" size="xs" w="fit-content" data-testid="alarm-trace">
              {t('trace.link')}
            </Button>
          )}
          <Text size="sm" c="dimmed">
            {t('alarms.span', { first: dateTime(alarm.first_at), last: dateTime(alarm.last_at), count: alarm.count })}
            {alarm.os_user ? ` · ${alarm.os_user}` : ''}
          </Text>
          <Title order={3}>{t('alarms.context')}</Title>
          {events.length === 0 && <Alert color="gray">{t('alarms.noContext')}</Alert>}
          {events.length > 0 && (
            <>
              <Text size="sm" c="dimmed" data-testid="context-count">
                {t(hasNextPage ? 'alarms.contextMore' : 'alarms.contextAll', { count: events.length })}
              </Text>
              <EventTable events={events} hasMore={hasNextPage} loadingMore={isFetchingNextPage} loadMore={loadMore} height={420} />
            </>
          )}
        </>
      )}
    </Stack>
  );
}
