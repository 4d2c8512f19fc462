import { Alert, Anchor, Loader, Stack } from '@mantine/core';
import { useEffect, useRef, useState } from 'react';
import { useTranslation } from 'react-i18next';
import { Link, useSearchParams } from 'react-router';
import { ApiError } from '../api/client';
import { AuthFrame } from './Login';

/** The page the verification mail links to: confirms the address once. */
export function Verify() {
  const { t } = useTranslation();
  const [params] = useSearchParams();
  const [state, setState] = useState<'busy' | 'done' | string>('busy');
  const sent = useRef(false);
  useEffect(() => {
    if (sent.current) return;
    sent.current = true;
    (async () => {
      const response = await fetch('/api/v1/auth/verify', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: params.get('token') ?? '' }),
      });
      if (response.ok) {
        setState('done');
      } else {
        const body = (await response.json().catch(() => null)) as { error?: { message?: string } } | null;
        setState(body?.error?.message ?? new ApiError(response.status, '', response.statusText).message);
      }
    })();
  }, [params]);
  return (
    <AuthFrame title={t('auth.verifyTitle')}>
      <Stack>
        {state === 'busy' && <Loader />}
        {state === 'done' && (
          <Alert color="teal" data-testid="verified">
            {t('auth.verified')}
          </Alert>
        )}
        {state !== 'busy' && state !== 'done' && (
          <Alert color="red" role="alert">
            {t('auth.verifyFailed', { message: state })}
          </Alert>
        )}
        <Anchor component={Link} to="/">
          {t('auth.toConsole')}
        </Anchor>
      </Stack>
    </AuthFrame>
  );
}
