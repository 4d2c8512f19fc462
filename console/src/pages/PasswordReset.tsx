// A forgotten password: ask for a reset mail (the answer is the same
// whether or not the address has an account), then choose a new password
// on the page the mail links to.

import { Alert, Anchor, Button, PasswordInput, Stack, TextInput } from '@mantine/core';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useSearchParams } from 'react-router';
import * as api from '../api/client';
import { FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { AuthFrame } from './Login';

export function ForgotPassword() {
  const { t } = useTranslation();
  const [email, setEmail] = useState('');
  const [sent, setSent] = useState(false);
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      await api.publicCall('POST', '/api/v1/auth/password-reset', { email });
      setSent(true);
    },
    ['email'],
  );
  return (
    <AuthFrame title={t('auth.forgotTitle')}>
      {sent ? (
        <Stack>
          <Alert color="teal" data-testid="reset-sent">
            {t('auth.resetSent', { email })}
          </Alert>
          <Anchor component={Link} to="/login">
            {t('auth.login')}
          </Anchor>
        </Stack>
      ) : (
        <form onSubmit={onSubmit}>
          <Stack>
            <TextInput
              label={t('auth.email')}
              type="email"
              autoComplete="username"
              required
              value={email}
              error={fieldError('email')}
              onChange={(e) => setEmail(e.currentTarget.value)}
            />
            <FormError error={error} />
            <Button type="submit" loading={busy}>
              {t('auth.sendReset')}
            </Button>
            <Anchor component={Link} to="/login" size="sm">
              {t('auth.login')}
            </Anchor>
          </Stack>
        </form>
      )}
    </AuthFrame>
  );
}

export function ResetPassword() {
  const { t } = useTranslation();
  const [params] = useSearchParams();
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      await api.publicCall('POST', '/api/v1/auth/password-reset/confirm', {
        token: params.get('token') ?? '',
        new_password: password,
      });
      setDone(true);
    },
    ['new_password'],
  );
  return (
    <AuthFrame title={t('auth.resetTitle')}>
      {done ? (
        <Stack>
          <Alert color="teal" data-testid="reset-done">
            {t('auth.resetDone')}
          </Alert>
          <Anchor component={Link} to="/login">
            {t('auth.login')}
          </Anchor>
        </Stack>
      ) : (
        <form onSubmit={onSubmit}>
          <Stack>
            <PasswordInput
              label={t('auth.newPassword')}
              description={t('auth.passwordHint')}
              autoComplete="new-password"
              required
              value={password}
              error={fieldError('new_password')}
              onChange={(e) => setPassword(e.currentTarget.value)}
            />
            <FormError error={error} />
            <Button type="submit" loading={busy}>
              {t('auth.setPassword')}
            </Button>
          </Stack>
        </form>
      )}
    </AuthFrame>
  );
}
