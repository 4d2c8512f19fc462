// The tenant's users and invitations: invite (administrator or auditor),
// change a role, disable, withdraw a pending invitation.

import { Alert, Stack, Title } from '@mantine/core';
import { useTranslation } from 'react-i18next';
import { useSession } from '../auth/session';
import { ChooseTenant, useTenantChosen } from '../components/Feedback';
import { People } from '../components/People';

export function Users() {
  const { t } = useTranslation();
  const { isMsp, canEdit } = useSession();
  const chosen = useTenantChosen(isMsp);
  return (
    <Stack>
      <Title order={2}>{t('users.title')}</Title>
      {!canEdit && <Alert color="gray">{t('app.readOnly')}</Alert>}
      {canEdit && !chosen && <ChooseTenant />}
      <People scope={{ base: '/api/v1', tenant: true, roles: ['auditor', 'tenant_admin'], enabled: canEdit && chosen }} />
    </Stack>
  );
}
