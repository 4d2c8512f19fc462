import { Button, PasswordInput, Stack } from '@mantine/core';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { useNavigate, useSearchParams } from 'react-router';
import * as api from '../api/client';
import { useSession } from '../auth/session';
import { FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { AuthFrame } from './Login';

/** The page an invitation mail links to: choose a password, join. */
export function AcceptInvitation() {
  const { t } = useTranslation();
  const { adopt } = useSession();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [password, setPassword] = useState('');
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      await api.authenticate('/api/v1/invitations/accept', { token: params.get('token') ?? '', password });
      await adopt();
      void navigate('/', { replace: true });
    },
    ['password'],
  );
  return (
    <AuthFrame title={t('auth.acceptTitle')}>
      <form onSubmit={onSubmit}>
        <Stack>
          <PasswordInput
            label={t('auth.password')}
            description={t('auth.passwordHint')}
            autoComplete="new-password"
            required
            value={password}
            error={fieldError('password')}
            onChange={(e) => setPassword(e.currentTarget.value)}
          />
          <FormError error={error} />
          <Button type="submit" loading={busy}>
            {t('auth.accept')}
          </Button>
        </Stack>
      </form>
    </AuthFrame>
  );
}
