// The frame of every page behind a session: the header (tenant switcher
// for MSP users, language, who is logged in) and the navigation.

import { AppShell, Badge, Burger, Button, Divider, Group, NavLink, SegmentedControl, Select, Text, Title } from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import type { ReactNode } from 'react';
import { useTranslation } from 'react-i18next';
import { NavLink as RouterLink, useLocation, useNavigate } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { useActingTenant } from './Feedback';
import { LANGUAGES, setLanguage } from '../i18n';
import type { Language } from '../i18n';

const PAGES = [
  { to: '/', key: 'nav.dashboard' },
  { to: '/alarms', key: 'nav.alarms' },
  { to: '/events', key: 'nav.events' },
  { to: '/files/trace', key: 'nav.fileTrace' },
  { to: '/devices', key: 'nav.devices' },
  { to: '/policies', key: 'nav.policies' },
  { to: '/groups', key: 'nav.groups' },
  { to: '/enrollment', key: 'nav.enrollment' },
  { to: '/users', key: 'nav.users' },
  { to: '/webhooks', key: 'nav.webhooks' },
  { to: '/settings', key: 'nav.settings' },
  { to: '/audit', key: 'nav.audit' },
] as const;

/** An MSP's own pages; team and templates are the administrators'. */
const MSP_PAGES = [
  { to: '/msp', key: 'nav.tenants', admin: false },
  { to: '/msp/team', key: 'nav.team', admin: true },
  { to: '/msp/templates', key: 'nav.templates', admin: true },
] as const;

export function LanguageSwitch() {
  const { i18n, t } = useTranslation();
  return (
    <SegmentedControl
      size="xs"
      aria-label={t('app.language')}
      value={i18n.language}
      onChange={(v) => setLanguage(v as Language)}
      data={LANGUAGES.map((l) => ({ value: l, label: l === 'ja' ? '日本語' : 'English' }))}
    />
  );
}

function TenantSwitch() {
  const { t } = useTranslation();
  const queries = useQueryClient();
  const tenant = useActingTenant();
  const tenants = useQuery({
    queryKey: ['tenants'],
    queryFn: () => api.call<Schemas['TenantSummary'][]>('GET', '/api/v1/tenants', { tenant: false }),
  });
  return (
    <Select
      size="xs"
      w={220}
      aria-label={t('app.tenant')}
      placeholder={t('app.chooseTenant')}
      value={tenant}
      data={(tenants.data ?? []).map((x) => ({ value: x.id, label: x.name }))}
      onChange={(v) => {
        api.setActingTenant(v);
        // Nothing of the previous tenant may linger on the page.
        void queries.resetQueries();
      }}
    />
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const { t } = useTranslation();
  const { me, logout, isMsp, may } = useSession();
  const [opened, { toggle }] = useDisclosure();
  const location = useLocation();
  const navigate = useNavigate();
  return (
    <AppShell header={{ height: 56 }} navbar={{ width: 220, breakpoint: 'sm', collapsed: { mobile: !opened } }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Group>
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" />
            <Title order={3}>{t('app.name')}</Title>
            {isMsp && <TenantSwitch />}
          </Group>
          <Group>
            <LanguageSwitch />
            {me && (
              <Group gap={6}>
                <Text size="sm" data-testid="me">
                  {me.email}
                </Text>
                <Badge variant="light">{t(`role.${me.role}`)}</Badge>
              </Group>
            )}
            <Button
              variant="subtle"
              size="xs"
              onClick={async () => {
                await logout();
                void navigate('/login');
              }}
            >
              {t('app.logout')}
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs">
        {isMsp &&
          MSP_PAGES.filter((p) => !p.admin || may('manage_org')).map((p) => (
            <NavLink
              key={p.to}
              component={RouterLink}
              to={p.to}
              label={t(p.key)}
              active={location.pathname === p.to}
            />
          ))}
        {isMsp && <Divider my="xs" label={t('app.tenantPages')} labelPosition="left" />}
        {PAGES.map((p) => (
          <NavLink
            key={p.to}
            component={RouterLink}
            to={p.to}
            label={t(p.key)}
            active={p.to === '/' ? location.pathname === '/' : location.pathname.startsWith(p.to)}
          />
        ))}
      </AppShell.Navbar>
      <AppShell.Main>{children}</AppShell.Main>
    </AppShell>
  );
}
