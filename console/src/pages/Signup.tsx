import { Anchor, Button, PasswordInput, SegmentedControl, Stack, Text, TextInput } from '@mantine/core';
import { useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useNavigate } from 'react-router';
import * as api from '../api/client';
import { useSession } from '../auth/session';
import { FormError } from '../components/Feedback';
import { useSubmit } from '../components/useSubmit';
import { AuthFrame } from './Login';

export function Signup() {
  const { t } = useTranslation();
  const { adopt } = useSession();
  const navigate = useNavigate();
  const [company, setCompany] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [kind, setKind] = useState<'tenant' | 'msp'>('tenant');
  const { busy, error, fieldError, onSubmit } = useSubmit(
    async () => {
      await api.authenticate('/api/v1/signup', { company, email, password, kind });
      await adopt();
      void navigate('/?welcome=1', { replace: true });
    },
    ['company', 'email', 'password'],
  );
  return (
    <AuthFrame title={t('auth.signupTitle')}>
      <form onSubmit={onSubmit}>
        <Stack>
          <TextInput
            label={t('auth.company')}
            required
            maxLength={200}
            value={company}
            error={fieldError('company')}
            onChange={(e) => setCompany(e.currentTarget.value)}
          />
          <TextInput
            label={t('auth.email')}
            type="email"
            autoComplete="username"
            required
            value={email}
            error={fieldError('email')}
            onChange={(e) => setEmail(e.currentTarget.value)}
          />
          <PasswordInput
            label={t('auth.password')}
            description={t('auth.passwordHint')}
            autoComplete="new-password"
            required
            value={password}
            error={fieldError('password')}
            onChange={(e) => setPassword(e.currentTarget.value)}
          />
          <Stack gap={4}>
            <Text size="sm" fw={500}>
              {t('auth.kind')}
            </Text>
            <SegmentedControl
              value={kind}
              onChange={(v) => setKind(v as 'tenant' | 'msp')}
              data={[
                { value: 'tenant', label: t('auth.kindTenant') },
                { value: 'msp', label: t('auth.kindMsp') },
              ]}
            />
          </Stack>
          <FormError error={error} />
          <Button type="submit" loading={busy}>
            {t('auth.signup')}
          </Button>
          <Text size="sm">
            {t('auth.haveAccount')}{' '}
            <Anchor component={Link} to="/login">
              {t('auth.login')}
            </Anchor>
          </Text>
        </Stack>
      </form>
    </AuthFrame>
  );
}
