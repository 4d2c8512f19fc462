// The console's routes: public pages (login, signup, links from mails) and
// the pages behind a session, inside the layout.

import { Center, Loader } from '@mantine/core';
import { Navigate, Outlet, createBrowserRouter, useLocation } from 'react-router';
import { useSession } from './auth/session';
import { Layout } from './components/Layout';
import { AcceptInvitation } from './pages/AcceptInvitation';
import { Alarms } from './pages/Alarms';
import { Dashboard } from './pages/Dashboard';
import { Devices } from './pages/Devices';
import { Login } from './pages/Login';
import { NotFound } from './pages/NotFound';
import { ForgotPassword, ResetPassword } from './pages/PasswordReset';
import { Signup } from './pages/Signup';
import { Verify } from './pages/Verify';

function RequireSession() {
  const { ready, me } = useSession();
  const location = useLocation();
  if (!ready) {
    return (
      <Center h="100vh">
        <Loader />
      </Center>
    );
  }
  if (!me) {
    const next = encodeURIComponent(location.pathname + location.search);
    return <Navigate to={`/login?next=${next}`} replace />;
  }
  return (
    <Layout>
      <Outlet />
    </Layout>
  );
}

export const router = createBrowserRouter([
  { path: '/login', element: <Login /> },
  { path: '/signup', element: <Signup /> },
  { path: '/verify', element: <Verify /> },
  { path: '/accept-invitation', element: <AcceptInvitation /> },
  { path: '/forgot-password', element: <ForgotPassword /> },
  { path: '/reset-password', element: <ResetPassword /> },
  {
    element: <RequireSession />,
    children: [
      { path: '/', element: <Dashboard /> },
      { path: '/alarms', element: <Alarms /> },
      { path: '/devices', element: <Devices /> },
      { path: '/alarms/:id', lazy: async () => ({ Component: (await import('./pages/AlarmDetail')).AlarmDetail }) },
      { path: '/devices/:id', lazy: async () => ({ Component: (await import('./pages/DeviceDetail')).DeviceDetail }) },
      { path: '/events', lazy: async () => ({ Component: (await import('./pages/Events')).Events }) },
      { path: '/files/trace', lazy: async () => ({ Component: (await import('./pages/FileTrace')).FileTrace }) },
      { path: '/policies', lazy: async () => ({ Component: (await import('./pages/Policies')).Policies }) },
      { path: '/groups', lazy: async () => ({ Component: (await import('./pages/Groups')).Groups }) },
      { path: '/users', lazy: async () => ({ Component: (await import('./pages/Users')).Users }) },
      { path: '/webhooks', lazy: async () => ({ Component: (await import('./pages/Webhooks')).Webhooks }) },
      { path: '/settings', lazy: async () => ({ Component: (await import('./pages/Settings')).Settings }) },
      { path: '/audit', lazy: async () => ({ Component: (await import('./pages/Audit')).Audit }) },
      { path: '/enrollment', lazy: async () => ({ Component: (await import('./pages/Enrollment')).Enrollment }) },
      { path: '/msp', lazy: async () => ({ Component: (await import('./pages/MspTenants')).MspTenants }) },
      { path: '/msp/team', lazy: async () => ({ Component: (await import('./pages/MspTeam')).MspTeam }) },
      { path: '/msp/templates', lazy: async () => ({ Component: (await import('./pages/MspTemplates')).MspTemplates }) },
      { path: '*', element: <NotFound /> },
    ],
  },
]);
