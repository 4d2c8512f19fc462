// The policy document editor: one card per section. A section switched
// off is left out of the document, so the level below (a group's or the
// tenant's policy) decides it. A field the API refuses shows the API's
// message next to it (`err('banned_apps[0].path')`).

import {
  ActionIcon,
  Button,
  Card,
  Checkbox,
  Group,
  MultiSelect,
  NumberInput,
  SegmentedControl,
  Select,
  Stack,
  Switch,
  TagsInput,
  Text,
  TextInput,
  Textarea,
  Title,
} from '@mantine/core';
import type { ReactNode } from 'react';
import { useTranslation } from 'react-i18next';
import type { Schemas } from '../api/client';
import { japanHolidays } from './holidays';
import { timeZones } from '../format';

export type PolicyDocument = Schemas['PolicyDocument'];
type BannedApp = Schemas['BannedApp'];
type Section = keyof PolicyDocument;

export const DEVICE_CLASSES = ['usb_storage', 'cd_dvd', 'floppy', 'smartphone', 'bluetooth', 'other'] as const;
export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export const CATEGORIES = [
  'environment_change',
  'new_app',
  'banned_app',
  'after_hours',
  'confidential_folder',
  'mass_print',
  'banned_web',
  'device_control',
  'unauthorized_pc',
] as const;

/** What a new section starts as when switched on. */
const EMPTY: { [K in Section]-?: NonNullable<PolicyDocument[K]> } = {
  banned_apps: [],
  device_control: { classes: {}, exceptions: [] },
  business_hours: {
    time_zone: 'Asia/Tokyo',
    shifts: Object.fromEntries(WEEKDAYS.slice(0, 5).map((d) => [d, [{ start: '09:00', end: '18:00' }]])),
    holidays: [],
  },
  confidential_folders: [],
  mass_print: { pages: 100, window_minutes: 60 },
  web: { block: [], alarm: [] },
  notifications: { routes: [] },
};

interface Props {
  doc: PolicyDocument;
  onChange: (doc: PolicyDocument) => void;
  /** The API's message for a field path, if it refused that field. */
  err: (path: string) => string | undefined;
  readOnly: boolean;
  webhooks: { value: string; label: string }[];
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

function SectionCard({
  section,
  doc,
  onChange,
  readOnly,
  err,
  children,
}: {
  section: Section;
  doc: PolicyDocument;
  onChange: (doc: PolicyDocument) => void;
  readOnly: boolean;
  err: (path: string) => string | undefined;
  children: ReactNode;
}) {
  const { t } = useTranslation();
  const on = doc[section] !== undefined && doc[section] !== null;
  return (
    <Card withBorder data-testid={`section-${section}`}>
      <Stack gap="xs">
        <Group justify="space-between">
          <Title order={4}>{t(`policy.sections.${section}`)}</Title>
          <Switch
            label={t('policy.setHere')}
            checked={on}
            disabled={readOnly}
            onChange={(e) => {
              const next = { ...doc };
              if (e.currentTarget.checked) (next as Record<string, unknown>)[section] = structuredClone(EMPTY[section]);
              else delete next[section];
              onChange(next);
            }}
          />
        </Group>
        {err(section) && (
          <Text c="red" size="sm" role="alert">
            {err(section)}
          </Text>
        )}
        {on ? children : <Text c="dimmed" size="sm">{t('policy.inherited')}</Text>}
      </Stack>
    </Card>
  );
}

/** Removes one entry of a list. */
function Remove({ onClick }: { onClick: () => void }) {
  const { t } = useTranslation();
  return (
    <ActionIcon variant="subtle" color="red" aria-label={t('app.delete')} onClick={onClick}>
      ✕
    </ActionIcon>
  );
}

/** Adds an entry to a list. */
function Add({ onClick, label }: { onClick: () => void; label: string }) {
  return (
    <Button variant="light" size="xs" w="fit-content" onClick={onClick}>
      {label}
    </Button>
  );
}

type MatchBy = 'name' | 'path' | 'sha256';
function matchOf(app: BannedApp): MatchBy {
  if (app.path != null) return 'path';
  if (app.sha256 != null) return 'sha256';
  return 'name';
}

function BannedApps({ doc, onChange, err, readOnly }: Props) {
  const { t } = useTranslation();
  const apps = doc.banned_apps ?? [];
  const set = (i: number, app: BannedApp) => onChange({ ...doc, banned_apps: apps.map((a, j) => (j === i ? app : a)) });
  return (
    <Stack gap="xs">
      {apps.map((app, i) => {
        const by = matchOf(app);
        return (
          <Group key={i} align="start" gap="xs" data-testid="banned-app">
            <Select
              aria-label={t('policy.banned.matchBy')}
              value={by}
              w={150}
              disabled={readOnly}
              allowDeselect={false}
              data={(['name', 'path', 'sha256'] as const).map((m) => ({ value: m, label: t(`policy.banned.by.${m}`) }))}
              onChange={(v) => {
                const value = app[by] ?? '';
                set(i, { action: app.action, label: app.label, [v as MatchBy]: value });
              }}
            />
            <TextInput
              aria-label={t(`policy.banned.by.${by}`)}
              placeholder={t(`policy.banned.placeholder.${by}`)}
              value={app[by] ?? ''}
              disabled={readOnly}
              error={err(`banned_apps[${i}].${by}`) ?? err(`banned_apps[${i}]`)}
              onChange={(e) => set(i, { ...app, [by]: e.currentTarget.value })}
              style={{ flex: 1 }}
            />
            <Select
              aria-label={t('policy.banned.action')}
              value={app.action}
              w={170}
              disabled={readOnly}
              allowDeselect={false}
              data={(['log', 'kill', 'block'] as const).map((a) => ({ value: a, label: t(`policy.banned.actions.${a}`) }))}
              onChange={(v) => set(i, { ...app, action: (v ?? 'log') as BannedApp['action'] })}
            />
            <TextInput
              aria-label={t('policy.banned.label')}
              placeholder={t('policy.banned.label')}
              value={app.label ?? ''}
              disabled={readOnly}
              error={err(`banned_apps[${i}].label`)}
              onChange={(e) => set(i, { ...app, label: e.currentTarget.value || null })}
              w={180}
            />
            {!readOnly && <Remove onClick={() => onChange({ ...doc, banned_apps: apps.filter((_, j) => j !== i) })} />}
          </Group>
        );
      })}
      {!readOnly && <Add onClick={() => onChange({ ...doc, banned_apps: [...apps, { name: '', action: 'kill' }] })} label={t('policy.banned.add')} />}
    </Stack>
  );
}

function DeviceControl({ doc, onChange, err, readOnly }: Props) {
  const { t } = useTranslation();
  const dc = doc.device_control ?? { classes: {}, exceptions: [] };
  const classes = dc.classes ?? {};
  const exceptions = dc.exceptions ?? [];
  const set = (next: Partial<typeof dc>) => onChange({ ...doc, device_control: { ...dc, ...next } });
  return (
    <Stack gap="xs">
      {DEVICE_CLASSES.map((c) => (
        <Group key={c} justify="space-between">
          <Text size="sm">{t(`policy.device.classes.${c}`)}</Text>
          <SegmentedControl
            size="xs"
            disabled={readOnly}
            value={classes[c] ?? 'allow'}
            data={(['allow', 'read_only', 'deny'] as const).map((a) => ({ value: a, label: t(`policy.device.access.${a}`) }))}
            onChange={(v) => set({ classes: { ...classes, [c]: v as Schemas['Access'] } })}
            data-testid={`class-${c}`}
          />
        </Group>
      ))}
      <Text size="sm" fw={500}>
        {t('policy.device.exceptions')}
      </Text>
      {exceptions.map((x, i) => {
        const setX = (patch: Partial<Schemas['DeviceException']>) =>
          set({ exceptions: exceptions.map((e, j) => (j === i ? { ...e, ...patch } : e)) });
        return (
          <Group key={i} gap="xs" align="start">
            {(
              [
                ['vendor_id', 'vendor', 'vendor', 110],
                ['product_id', 'product', 'product', 110],
                ['serial', 'serial', 'serialAny', 170],
              ] as const
            ).map(([key, label, placeholder, w]) => (
              <TextInput
                key={key}
                aria-label={t(`policy.device.${label}`)}
                placeholder={t(`policy.device.${placeholder}`)}
                w={w}
                value={x[key] ?? ''}
                disabled={readOnly}
                error={err(`device_control.exceptions[${i}].${key}`)}
                onChange={(e) => setX({ [key]: key === 'serial' ? e.currentTarget.value || null : e.currentTarget.value })}
              />
            ))}
            <TextInput
              type="datetime-local"
              aria-label={t('policy.device.until')}
              w={210}
              value={x.until ? x.until.slice(0, 16) : ''}
              disabled={readOnly}
              error={err(`device_control.exceptions[${i}].until`)}
              onChange={(e) => setX({ until: e.currentTarget.value ? new Date(e.currentTarget.value).toISOString() : null })}
            />
            <TextInput
              aria-label={t('policy.device.note')}
              placeholder={t('policy.device.note')}
              value={x.note ?? ''}
              disabled={readOnly}
              onChange={(e) => setX({ note: e.currentTarget.value || null })}
              style={{ flex: 1 }}
            />
            {!readOnly && <Remove onClick={() => set({ exceptions: exceptions.filter((_, j) => j !== i) })} />}
          </Group>
        );
      })}
      {!readOnly && <Add onClick={() => set({ exceptions: [...exceptions, { vendor_id: '', product_id: '' }] })} label={t('policy.device.addException')} />}
    </Stack>
  );
}

function BusinessHours({ doc, onChange, err, readOnly }: Props) {
  const { t } = useTranslation();
  const bh = doc.business_hours ?? EMPTY.business_hours;
  const shifts = bh.shifts ?? {};
  const holidays = bh.holidays ?? [];
  const set = (next: Partial<typeof bh>) => onChange({ ...doc, business_hours: { ...bh, ...next } });
  const year = new Date().getFullYear();
  return (
    <Stack gap="xs">
      <Select
        label={t('policy.hours.timeZone')}
        searchable
        w={260}
        disabled={readOnly}
        value={bh.time_zone}
        data={timeZones()}
        error={err('business_hours.time_zone')}
        onChange={(v) => set({ time_zone: v ?? 'Asia/Tokyo' })}
      />
      {WEEKDAYS.map((d) => {
        const day = shifts[d] ?? [];
        const setDay = (next: Schemas['Shift'][]) => {
          const all = { ...shifts };
          if (next.length) all[d] = next;
          else delete all[d];
          set({ shifts: all });
        };
        return (
          <Group key={d} gap="xs" align="start">
            <Text size="sm" w={60} pt={6}>
              {t(`policy.hours.days.${d}`)}
            </Text>
            {day.length === 0 && (
              <Text size="sm" c="dimmed" pt={6}>
                {t('policy.hours.dayOff')}
              </Text>
            )}
            {day.map((s, i) => (
              <Group key={i} gap={4}>
                <TextInput
                  aria-label={`${t(`policy.hours.days.${d}`)} ${t('policy.hours.start')}`}
                  w={80}
                  value={s.start}
                  disabled={readOnly}
                  error={err(`business_hours.shifts.${d}[${i}].start`) ?? err(`business_hours.shifts.${d}[${i}]`)}
                  onChange={(e) => setDay(day.map((x, j) => (j === i ? { ...x, start: e.currentTarget.value } : x)))}
                />
                <Text size="sm">–</Text>
                <TextInput
                  aria-label={`${t(`policy.hours.days.${d}`)} ${t('policy.hours.end')}`}
                  w={80}
                  value={s.end}
                  disabled={readOnly}
                  error={err(`business_hours.shifts.${d}[${i}].end`)}
                  onChange={(e) => setDay(day.map((x, j) => (j === i ? { ...x, end: e.currentTarget.value } : x)))}
                />
                {!readOnly && <Remove onClick={() => setDay(day.filter((_, j) => j !== i))} />}
              </Group>
            ))}
            {!readOnly && day.length < 4 && (
              <Button size="compact-xs" variant="subtle" onClick={() => setDay([...day, { start: '09:00', end: '18:00' }])}>
                {t('policy.hours.addShift')}
              </Button>
            )}
          </Group>
        );
      })}
      <Text size="xs" c="dimmed">
        {t('policy.hours.nightHint')}
      </Text>
      <TagsInput
        label={t('policy.hours.holidays')}
        description={t('policy.hours.holidaysHint')}
        disabled={readOnly}
        value={holidays}
        error={err('business_hours.holidays')}
        onChange={(v) => set({ holidays: [...new Set(v)].sort() })}
        clearable
      />
      {!readOnly && (
        <Group gap="xs">
          {[year, year + 1, year + 2].map((y) => (
            <Button
              key={y}
              size="xs"
              variant="light"
              onClick={() => set({ holidays: [...new Set([...holidays, ...japanHolidays(y)])].sort() })}
            >
              {t('policy.hours.addJapan', { year: y })}
            </Button>
          ))}
        </Group>
      )}
    </Stack>
  );
}

function Routes({ doc, onChange, err, readOnly, webhooks }: Props) {
  const { t } = useTranslation();
  const routes = doc.notifications?.routes ?? [];
  const set = (next: Schemas['Route'][]) => onChange({ ...doc, notifications: { routes: next } });
  const categories = [{ value: '*', label: t('policy.routes.all') }, ...CATEGORIES.map((c) => ({ value: c, label: t(`category.${c}`) }))];
  return (
    <Stack gap="xs">
      {routes.map((r, i) => {
        const setR = (patch: Partial<Schemas['Route']>) => set(routes.map((x, j) => (j === i ? { ...x, ...patch } : x)));
        return (
          <Card key={i} withBorder padding="xs">
            <Stack gap={4}>
              <MultiSelect
                label={t('policy.routes.categories')}
                data={categories}
                value={r.categories}
                disabled={readOnly}
                error={err(`notifications.routes[${i}].categories`)}
                onChange={(v) => setR({ categories: v })}
              />
              <TagsInput
                label={t('policy.routes.email')}
                value={r.email ?? []}
                disabled={readOnly}
                error={err(`notifications.routes[${i}].email`) ?? routeErrorAt(err, i, 'email')}
                onChange={(v) => setR({ email: v })}
              />
              <MultiSelect
                label={t('policy.routes.webhooks')}
                data={webhooks}
                value={r.webhooks ?? []}
                disabled={readOnly}
                error={err(`notifications.routes[${i}].webhooks`) ?? routeErrorAt(err, i, 'webhooks')}
                onChange={(v) => setR({ webhooks: v })}
              />
              <Group justify="space-between">
                <SegmentedControl
                  size="xs"
                  disabled={readOnly}
                  value={r.mode ?? 'immediate'}
                  data={(['immediate', 'digest'] as const).map((m) => ({ value: m, label: t(`policy.routes.modes.${m}`) }))}
                  onChange={(v) => setR({ mode: v as Schemas['Delivery'] })}
                />
                {!readOnly && (
                  <Button size="compact-xs" variant="subtle" color="red" onClick={() => set(routes.filter((_, j) => j !== i))}>
                    {t('app.delete')}
                  </Button>
                )}
              </Group>
            </Stack>
          </Card>
        );
      })}
      {!readOnly && <Add onClick={() => set([...routes, { categories: ['*'], email: [], webhooks: [] }])} label={t('policy.routes.add')} />}
    </Stack>
  );
}

/** An error on one entry of a route's list (`…email[2]`) shown on the list. */
function routeErrorAt(err: Props['err'], route: number, list: string): string | undefined {
  for (let k = 0; k < 20; k++) {
    const e = err(`notifications.routes[${route}].${list}[${k}]`);
    if (e) return e;
  }
  return undefined;
}

export function PolicyEditor(props: Props) {
  const { t } = useTranslation();
  const { doc, onChange, err, readOnly } = props;
  const card = { doc, onChange, err, readOnly };
  return (
    <Stack>
      <SectionCard section="banned_apps" {...card}>
        <BannedApps {...props} />
      </SectionCard>
      <SectionCard section="device_control" {...card}>
        <DeviceControl {...props} />
      </SectionCard>
      <SectionCard section="business_hours" {...card}>
        <BusinessHours {...props} />
      </SectionCard>
      <SectionCard section="confidential_folders" {...card}>
        <Textarea
          label={t('policy.folders.label')}
          description={t('policy.folders.hint')}
          autosize
          minRows={2}
          disabled={readOnly}
          defaultValue={(doc.confidential_folders ?? []).join('\n')}
          error={err('confidential_folders') ?? firstIndexed(err, 'confidential_folders')}
          onBlur={(e) => onChange({ ...doc, confidential_folders: lines(e.currentTarget.value) })}
        />
      </SectionCard>
      <SectionCard section="mass_print" {...card}>
        <Group>
          <NumberInput
            label={t('policy.print.pages')}
            min={1}
            disabled={readOnly}
            value={doc.mass_print?.pages ?? 100}
            error={err('mass_print.pages')}
            onChange={(v) => onChange({ ...doc, mass_print: { window_minutes: doc.mass_print?.window_minutes ?? 60, pages: Number(v) || 0 } })}
          />
          <NumberInput
            label={t('policy.print.window')}
            min={1}
            disabled={readOnly}
            value={doc.mass_print?.window_minutes ?? 60}
            error={err('mass_print.window_minutes')}
            onChange={(v) => onChange({ ...doc, mass_print: { pages: doc.mass_print?.pages ?? 100, window_minutes: Number(v) || 0 } })}
          />
        </Group>
      </SectionCard>
      <SectionCard section="web" {...card}>
        <Group grow align="start">
          <Textarea
            label={t('policy.web.block')}
            description={t('policy.web.hint')}
            autosize
            minRows={2}
            disabled={readOnly}
            defaultValue={(doc.web?.block ?? []).join('\n')}
            error={err('web.block') ?? firstIndexed(err, 'web.block')}
            onBlur={(e) => onChange({ ...doc, web: { ...doc.web, alarm: doc.web?.alarm ?? [], block: lines(e.currentTarget.value) } })}
          />
          <Textarea
            label={t('policy.web.alarm')}
            description={t('policy.web.hint')}
            autosize
            minRows={2}
            disabled={readOnly}
            defaultValue={(doc.web?.alarm ?? []).join('\n')}
            error={err('web.alarm') ?? firstIndexed(err, 'web.alarm')}
            onBlur={(e) => onChange({ ...doc, web: { ...doc.web, block: doc.web?.block ?? [], alarm: lines(e.currentTarget.value) } })}
          />
        </Group>
        <Checkbox
          mt="sm"
          label={t('policy.web.fullUrl')}
          description={t('policy.web.fullUrlHint')}
          disabled={readOnly}
          checked={doc.web?.full_url ?? false}
          onChange={(e) =>
            onChange({
              ...doc,
              web: { block: doc.web?.block ?? [], alarm: doc.web?.alarm ?? [], full_url: e.currentTarget.checked },
            })
          }
        />
      </SectionCard>
      <SectionCard section="notifications" {...card}>
        <Routes {...props} />
      </SectionCard>
    </Stack>
  );
}

/** The first refused entry of a list field (`web.block[3]`). */
function firstIndexed(err: Props['err'], field: string): string | undefined {
  for (let k = 0; k < 2000; k++) {
    const e = err(`${field}[${k}]`);
    if (e) return `${k + 1}: ${e}`;
  }
  return undefined;
}
