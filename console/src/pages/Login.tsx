import { Anchor, Button, Center, Group, Paper, PasswordInput, Stack, Text, TextInput, Title } from '@mantine/core';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, Navigate, useNavigate, useSearchParams } from 'react-router';
import { useSession } from '../auth/session';
import { LanguageSwitch } from '../components/Layout';
import { FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';

/** Where to go after logging in: a path of the console only. */
export function safeNext(next: string | null): string {
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

export function AuthFrame({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <Center mih="100vh" p="md">
      <Paper withBorder shadow="sm" p="xl" w={420}>
        <Stack>
          <Group justify="space-between">
            <Title order={2}>{title}</Title>
            <LanguageSwitch />
          </Group>
          {children}
        </Stack>
      </Paper>
    </Center>
  );
}

export function Login() {
  const { t } = useTranslation();
  const { me, ready, login } = useSession();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const next = safeNext(params.get('next'));
  const { busy, error, onSubmit } = useSubmit(async () => {
    await login(email, password);
    void navigate(next, { replace: true });
  });
  if (ready && me) return <Navigate to={next} replace />;
  return (
    <AuthFrame title={t('auth.loginTitle')}>
      <form onSubmit={onSubmit}>
        <Stack>
          <TextInput label={t('auth.email')} type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.currentTarget.value)} />
          <PasswordInput label={t('auth.password')} autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
          <FormError error={error} />
          <Button type="submit" loading={busy}>
            {t('auth.login')}
          </Button>
          <Anchor component={Link} to="/forgot-password" size="sm">
            {t('auth.forgot')}
          </Anchor>
          <Text size="sm">
            {t('auth.noAccount')}{' '}
            <Anchor component={Link} to="/signup">
              {t('auth.signup')}
            </Anchor>
          </Text>
        </Stack>
      </form>
    </AuthFrame>
  );
}
