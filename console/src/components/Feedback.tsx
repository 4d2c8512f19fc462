// How a page says it is loading, failed, or needs a tenant chosen first.

import { Alert, Button, Center, Loader, Stack, Text } from '@mantine/core';
import { useSyncExternalStore } from 'react';
import { useTranslation } from 'react-i18next';
import * as api from '../api/client';

export function Loading() {
  const { t } = useTranslation();
  return (
    <Center p="xl" aria-label={t('app.loading')}>
      <Loader />
    </Center>
  );
}

/** An error: a refusal of the caller's (4xx) as the API's message, which
 * says what to do; anything else as a failure with that message. */
export function Failure({ error, retry }: { error: unknown; retry?: () => void }) {
  const { t } = useTranslation();
  const raw = error instanceof Error ? error.message : String(error);
  const refused = error instanceof api.ApiError && error.status >= 400 && error.status < 500;
  const message = refused ? raw : null;
  return (
    <Alert color="red" role="alert">
      <Stack gap="xs">
        <Text size="sm">{message ?? t('app.error', { message: raw })}</Text>
        {retry && (
          <Button size="xs" variant="light" onClick={retry} w="fit-content">
            {t('app.retry')}
          </Button>
        )}
      </Stack>
    </Alert>
  );
}

/** The tenant an MSP user acts on; the page renders again when it
 * changes. */
export function useActingTenant(): string | null {
  return useSyncExternalStore(api.onTenantChange, api.getActingTenant);
}

/** True when the page can ask for the tenant's data (an MSP user has to
 * choose a tenant first). */
export function useTenantChosen(isMsp: boolean): boolean {
  const tenant = useActingTenant();
  return !isMsp || tenant !== null;
}

export function ChooseTenant() {
  const { t } = useTranslation();
  return (
    <Alert color="blue" data-testid="choose-tenant">
      {t('app.chooseTenant')}
    </Alert>
  );
}

/** A form's refusal that names no field of the form (those show at the
 * field). */
export function FormError({ error, mt }: { error: string | null; mt?: string }) {
  if (!error) return null;
  return (
    <Alert color="red" role="alert" mt={mt}>
      {error}
    </Alert>
  );
}
