// The frame of every page behind a session: the header (tenant switcher
// for MSP users, language, who is logged in) and the navigation.

import { AppShell, Badge, Burger, Button, Group, NavLink, SegmentedControl, Select, Text, Title } from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import type { ReactNode } from 'react';
import { useTranslation } from 'react-i18next';
import { NavLink as RouterLink, useLocation, useNavigate } from 'react-router';
import * as api from '../api/client';
import type { Schemas } from '../api/client';
import { useSession } from '../auth/session';
import { LANGUAGES, setLanguage } from '../i18n';
import type { Language } from '../i18n';

const PAGES = [
  { to: '/', key: 'nav.dashboard' },
  { to: '/alarms', key: 'nav.alarms' },
  { to: '/events', key: 'nav.events' },
  { to: '/devices', key: 'nav.devices' },
  { to: '/policies', key: 'nav.policies' },
  { to: '/groups', key: 'nav.groups' },
  { to: '/enrollment', key: 'nav.enrollment' },
  { to: '/users', key: 'nav.users' },
  { to: '/webhooks', key: 'nav.webhooks' },
  { to: '/settings', key: 'nav.settings' },
  { to: '/audit', key: 'nav.audit' },
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
  const [tenant, setTenant] = useState(api.getActingTenant());
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
        setTenant(v);
        void queries.invalidateQueries();
      }}
    />
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const { t } = useTranslation();
  const { me, logout, isMsp } = useSession();
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
