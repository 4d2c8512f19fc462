-- Hardening after the outside security review (issue 18).

-- SECURITY DEFINER functions run as the owner. With `search_path = public`
-- alone, PostgreSQL still searches the session's temporary schema first for
-- tables, so a role that may create temporary tables could shadow
-- `tenants` or `events` inside them (measured: a temporary `tenants` made
-- mamori_policy_revisions return forged rows and mamori_apply_retention
-- delete another tenant's events as the owner). Every definer function
-- now names pg_temp last, and nobody but the owner may create temporary
-- tables or objects in `public`.
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS sig FROM pg_proc p
        WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f.sig);
    END LOOP;
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Database privileges are not copied when a database is created from
-- another as a template, so this is a function the owner can run again on
-- such a copy (the tests' databases are).
CREATE FUNCTION mamori_revoke_temp() RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp
    AS $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
REVOKE ALL ON FUNCTION mamori_revoke_temp() FROM PUBLIC;
SELECT mamori_revoke_temp();

-- A user's session epoch: access tokens carry the epoch they were issued
-- at, and the gateway refuses one whose epoch is behind the user's. It is
-- bumped when the user is disabled, changes role or password, or logs out
-- everywhere, so that an access token stops working at once rather than
-- when it expires.
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;

-- What the gateway checks on every request (through a short cache): the
-- user's epoch and whether it is disabled, and whether the login (refresh
-- family) the token came from was logged out. Refresh tokens have no policy
-- for the application role, hence a definer function.
CREATE FUNCTION mamori_session_state(owner uuid, family uuid)
    RETURNS TABLE (session_epoch integer, disabled boolean, family_revoked boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT u.session_epoch, u.disabled_at IS NOT NULL,
                 family IS NOT NULL AND EXISTS (
                     SELECT 1 FROM refresh_tokens r
                     WHERE r.family_id = family AND r.user_id = owner AND r.revoked_at IS NOT NULL)
          FROM users u WHERE u.id = owner $$;

-- Ends every session of a user at once: refresh tokens revoked, epoch
-- bumped (disabling, a role or password change, logging out everywhere).
-- Replaces the refresh-only version.
DROP FUNCTION mamori_revoke_user_sessions(uuid);
CREATE FUNCTION mamori_revoke_user_sessions(owner uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    epoch integer;
BEGIN
    UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = owner;
    UPDATE users SET session_epoch = session_epoch + 1 WHERE id = owner RETURNING session_epoch INTO epoch;
    RETURN epoch;
END
$$;

-- Who made a tenant's pending handover code: it goes when they lose their
-- rights, like their invitations.
ALTER TABLE tenants ADD COLUMN handover_created_by uuid;

-- What a user granted that nobody used yet — invitations and a handover
-- code — withdrawn when the user is disabled or changes role: whatever
-- tenant or organisation they were for (an MSP user invites into its
-- tenants too), so a definer function. Returns how many.
CREATE FUNCTION mamori_void_invitations_of(inviter uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    invitations_gone integer;
    codes_gone integer;
BEGIN
    UPDATE invitations SET revoked_at = now()
    WHERE invited_by = inviter AND accepted_at IS NULL AND revoked_at IS NULL;
    GET DIAGNOSTICS invitations_gone = ROW_COUNT;
    UPDATE tenants SET handover_hash = NULL, handover_expires_at = NULL, handover_created_by = NULL
    WHERE handover_created_by = inviter AND handover_hash IS NOT NULL;
    GET DIAGNOSTICS codes_gone = ROW_COUNT;
    RETURN invitations_gone + codes_gone;
END
$$;
CREATE INDEX invitations_inviter ON invitations (invited_by) WHERE accepted_at IS NULL AND revoked_at IS NULL;

REVOKE ALL ON FUNCTION mamori_session_state(uuid, uuid), mamori_revoke_user_sessions(uuid),
    mamori_void_invitations_of(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_session_state(uuid, uuid), mamori_revoke_user_sessions(uuid),
    mamori_void_invitations_of(uuid) TO mamori_app;

-- Login reads the epoch a new session starts at.
DROP FUNCTION mamori_user_for_login(text);
CREATE FUNCTION mamori_user_for_login(login_email text)
    RETURNS TABLE (id uuid, password_hash text, tenant_id uuid, msp_org_id uuid, role text,
                   disabled boolean, failed_logins integer, last_failed_at timestamptz, session_epoch integer)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT u.id, u.password_hash, u.tenant_id, u.msp_org_id, u.role, u.disabled_at IS NOT NULL,
                 u.failed_logins, u.last_failed_at, u.session_epoch
          FROM users u WHERE u.email = login_email $$;

-- Logout names the login it ended, so the gateway can forget it at once.
DROP FUNCTION mamori_revoke_refresh_family(bytea);
CREATE FUNCTION mamori_revoke_refresh_family(hash bytea) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    fam uuid;
BEGIN
    SELECT r.family_id INTO fam FROM refresh_tokens r WHERE r.token_hash = hash;
    IF fam IS NOT NULL THEN
        UPDATE refresh_tokens r SET revoked_at = coalesce(r.revoked_at, now()) WHERE r.family_id = fam;
    END IF;
    RETURN fam;
END
$$;
REVOKE ALL ON FUNCTION mamori_user_for_login(text), mamori_revoke_refresh_family(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_user_for_login(text), mamori_revoke_refresh_family(bytea) TO mamori_app;

-- Addresses a tenant's alarm mail may go to besides its own verified users:
-- each is mailed a confirmation link first, and nothing else until it is
-- followed (an unverified signup could otherwise route agent-written
-- alarm text to a thousand strangers per alarm).
CREATE TABLE notification_recipients (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Normalised by mamori_policy::recipients::normalise (lower case).
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    -- SHA-256 of the confirmation secret, until it is used.
    token_hash    bytea       UNIQUE CHECK (length(token_hash) = 32),
    requested_by  uuid,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    PRIMARY KEY (tenant_id, email)
);

-- Addresses routed to before this version keep receiving mail: the
-- administrators who chose them were trusted then (new ones confirm).
INSERT INTO notification_recipients (tenant_id, email, confirmed_at)
SELECT DISTINCT p.tenant_id, lower(e #>> '{}'), now()
FROM policies p, jsonb_path_query(p.document, '$.notifications.routes[*].email[*]') AS e
WHERE p.document IS NOT NULL AND length(e #>> '{}') BETWEEN 3 AND 254
ON CONFLICT DO NOTHING;

-- The day each tenant reached its daily mail quota (its owners were told once).
CREATE TABLE mail_quota_notices (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day        date NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notification_recipients', 'mail_quota_notices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = (SELECT mamori_current_tenant()))'
                       ' WITH CHECK (tenant_id = (SELECT mamori_current_tenant()))', t);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE ON notification_recipients TO mamori_app;
GRANT SELECT, INSERT ON mail_quota_notices TO mamori_app;

-- Alarm mails a tenant queued today (the quota counts them).
CREATE INDEX notification_outbox_mail_day ON notification_outbox (tenant_id, created_at)
    WHERE channel = 'email' AND alarm_id IS NOT NULL;

-- Follows a confirmation link: the address whose secret hashes to `hash`
-- (asked for within the last 7 days) is confirmed. Before any tenant is
-- known, hence a definer function; it reveals only what the secret names.
CREATE FUNCTION mamori_confirm_recipient(hash bytea)
    RETURNS TABLE (tenant_id uuid, email text)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ UPDATE notification_recipients r SET confirmed_at = now(), token_hash = NULL
          WHERE r.token_hash = hash AND r.requested_at > now() - interval '7 days'
          RETURNING r.tenant_id, r.email $$;
REVOKE ALL ON FUNCTION mamori_confirm_recipient(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_confirm_recipient(bytea) TO mamori_app;
