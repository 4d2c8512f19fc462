// A long list of events, virtualised: only the rows in view are in the
// page, so ten thousand loaded rows scroll as smoothly as fifty. Asks for
// the next page when the end comes into view. A file operation links to
// the trace of its file (device and path).

import { Anchor, Box, Code, Drawer, Group, ScrollArea, Stack, Text } from '@mantine/core';
import { useVirtualizer } from '@tanstack/react-virtual';
import { useEffect, useRef, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link } from 'react-router';
import type { Schemas } from '../api/client';
import { dateTime } from '../format';
import { traceLink } from './fileTrace';
import { isFileKind } from './kinds';

type EventView = Schemas['EventView'];
const ROW = 36;
const COLUMNS = '170px 160px 120px 150px 1fr 72px';

export function EventTable({
  events,
  hasMore,
  loadingMore,
  loadMore,
  height = 560,
}: {
  events: EventView[];
  hasMore: boolean;
  loadingMore: boolean;
  loadMore: () => void;
  height?: number;
}) {
  const { t } = useTranslation();
  const parent = useRef<HTMLDivElement>(null);
  const [open, setOpen] = useState<EventView | null>(null);
  const rows = useVirtualizer({
    count: events.length + (hasMore ? 1 : 0),
    getScrollElement: () => parent.current,
    estimateSize: () => ROW,
    overscan: 12,
  });
  const items = rows.getVirtualItems();
  const last = items.at(-1);
  useEffect(() => {
    if (last && last.index >= events.length - 1 && hasMore && !loadingMore) loadMore();
  }, [last, events.length, hasMore, loadingMore, loadMore]);
  return (
    <Box data-testid="events">
      <Box
        style={{ display: 'grid', gridTemplateColumns: COLUMNS, fontWeight: 600, fontSize: 14, borderBottom: '1px solid var(--mantine-color-gray-3)' }}
        py={6}
      >
        <span>{t('events.time')}</span>
        <span>{t('events.device')}</span>
        <span>{t('events.user')}</span>
        <span>{t('events.kind')}</span>
        <span>{t('events.subject')}</span>
        <span />
      </Box>
      <div ref={parent} style={{ height, overflow: 'auto' }} data-testid="events-scroll">
        <div style={{ height: rows.getTotalSize(), position: 'relative' }}>
          {items.map((item) => {
            const e = events[item.index];
            return (
              <div
                key={item.key}
                data-index={item.index}
                style={{
                  position: 'absolute',
                  top: 0,
                  left: 0,
                  width: '100%',
                  height: ROW,
                  transform: `translateY(${item.start}px)`,
                  display: 'grid',
                  gridTemplateColumns: COLUMNS,
                  alignItems: 'center',
                  fontSize: 13,
                  borderBottom: '1px solid var(--mantine-color-gray-2)',
                  cursor: e ? 'pointer' : 'default',
                }}
                onClick={() => e && setOpen(e)}
                data-testid={e ? 'event-row' : 'event-loading'}
              >
                {e ? (
                  <>
                    <span>{dateTime(e.time)}</span>
                    <span style={{ overflow: 'hidden', textOverflow: 'ellipsis', whiteSpace: 'nowrap' }}>{e.hostname}</span>
                    <span style={{ overflow: 'hidden', textOverflow: 'ellipsis', whiteSpace: 'nowrap' }}>{e.os_user}</span>
                    <span>{t(`kind.${e.kind}`, { defaultValue: e.kind })}</span>
                    <span style={{ overflow: 'hidden', textOverflow: 'ellipsis', whiteSpace: 'nowrap' }} title={e.subject}>
                      {e.subject}
                    </span>
                    <span>
                      {isFileKind(e.kind) && e.subject && (
                        <Anchor
                          component={Link}
                          to={traceLink({ device: e.device_id, path: e.subject })}
                          size="sm"
                          onClick={(ev) => ev.stopPropagation()}
                          data-testid="event-trace"
                        >
                          {t('trace.short')}
                        </Anchor>
                      )}
                    </span>
                  </>
                ) : (
                  <span>{t('app.loading')}</span>
                )}
              </div>
            );
          })}
        </div>
      </div>
      <Drawer opened={open !== null} onClose={() => setOpen(null)} position="right" size="lg" title={t('events.detail')}>
        {open && (
          <Stack gap="xs" data-testid="event-detail">
            <Group gap="xs">
              <Text fw={600}>{t('events.time')}:</Text>
              <Text>{dateTime(open.time)}</Text>
            </Group>
            <Group gap="xs">
              <Text fw={600}>{t('events.device')}:</Text>
              <Text>{open.hostname}</Text>
            </Group>
            <Group gap="xs">
              <Text fw={600}>{t('events.user')}:</Text>
              <Text>{open.os_user}</Text>
            </Group>
            <Group gap="xs">
              <Text fw={600}>{t('events.kind')}:</Text>
              <Text>{t(`kind.${open.kind}`, { defaultValue: open.kind })}</Text>
            </Group>
            <Text fw={600}>{t('events.subject')}:</Text>
            <Code block>{open.subject}</Code>
            {isFileKind(open.kind) && open.subject && (
              <Anchor component={Link} to={traceLink({ device: open.device_id, path: open.subject })} data-testid="event-detail-trace">
                {t('trace.link')}
              </Anchor>
            )}
            <Text fw={600}>{t('events.raw')}:</Text>
            <ScrollArea h={360}>
              <Code block>{JSON.stringify(open.detail, null, 2)}</Code>
            </ScrollArea>
            <Text size="xs" c="dimmed">
              {t('events.received', { at: dateTime(open.received_at) })}
            </Text>
          </Stack>
        )}
      </Drawer>
    </Box>
  );
}
