-- The gateway: MSP organisations, users and roles, refresh tokens, signing
-- keys, invitations, groups, licence caps, retention and the audit log.
--
-- Besides the tenant (`mamori.tenant_id`), a transaction may name the MSP
-- organisation (`mamori.org_id`) and the user (`mamori.user_id`) it acts
-- for; the gateway sets them from the verified access token only. Tables
-- that hold secrets no request may list (signing keys, refresh tokens) have
-- no policy for the application role at all: it reaches them only through
-- the SECURITY DEFINER functions below, each of which does one narrow thing.

CREATE FUNCTION mamori_current_org() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('mamori.org_id', true), '')::uuid $$;

CREATE FUNCTION mamori_current_user() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('mamori.user_id', true), '')::uuid $$;

CREATE TABLE msp_orgs (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants
    ADD COLUMN msp_org_id     uuid    REFERENCES msp_orgs (id) ON DELETE SET NULL,
    -- The licence cap: enrolled, unrevoked devices.
    ADD COLUMN device_limit   integer NOT NULL DEFAULT 100 CHECK (device_limit BETWEEN 1 AND 1000000),
    -- How long operation logs are kept: 90 days to 7 years.
    ADD COLUMN retention_days integer NOT NULL DEFAULT 365 CHECK (retention_days BETWEEN 90 AND 2557),
    -- A tenant admin hands the tenant over to an MSP with a one-time code.
    ADD COLUMN handover_hash       bytea UNIQUE CHECK (length(handover_hash) = 32),
    ADD COLUMN handover_expires_at timestamptz;
CREATE INDEX tenants_msp ON tenants (msp_org_id) WHERE msp_org_id IS NOT NULL;

-- An MSP's users see the tenants their organisation runs.
DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants
    USING (id = (SELECT mamori_current_tenant())
           OR (msp_org_id IS NOT NULL AND msp_org_id = (SELECT mamori_current_org())))
    WITH CHECK (id = (SELECT mamori_current_tenant())
           OR (msp_org_id IS NOT NULL AND msp_org_id = (SELECT mamori_current_org())));

ALTER TABLE msp_orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE msp_orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON msp_orgs
    USING (id = (SELECT mamori_current_org())) WITH CHECK (id = (SELECT mamori_current_org()));

-- Offices and departments: a tree per tenant.
CREATE TABLE groups (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    parent_id   uuid,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE groups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON groups
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));
CREATE UNIQUE INDEX groups_name ON groups (tenant_id, coalesce(parent_id, '00000000-0000-0000-0000-000000000000'), lower(name));

ALTER TABLE enrollment_tokens
    ADD COLUMN group_id uuid,
    ADD CONSTRAINT enrollment_tokens_group FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id) ON DELETE SET NULL (group_id);
ALTER TABLE devices
    ADD COLUMN group_id uuid,
    ADD COLUMN policy_version bigint,
    -- Deleting a device keeps a revoked tombstone, so that ingest still
    -- sees the revocation and cuts an open stream.
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT devices_group FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id) ON DELETE SET NULL (group_id);
CREATE INDEX devices_group ON devices (tenant_id, group_id);

-- Users log in with a globally unique e-mail address. A user belongs either
-- to one tenant (tenant_admin, auditor) or to one MSP organisation
-- (msp_admin, msp_technician).
CREATE TABLE users (
    id                 uuid        PRIMARY KEY,
    email              text        NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    display_name       text        NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    password_hash      text        NOT NULL,
    tenant_id          uuid        REFERENCES tenants (id) ON DELETE CASCADE,
    msp_org_id         uuid        REFERENCES msp_orgs (id) ON DELETE CASCADE,
    role               text        NOT NULL CHECK (role IN ('msp_admin', 'msp_technician', 'tenant_admin', 'auditor')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    email_verified_at  timestamptz,
    -- SHA-256 of the e-mail verification secret, until it is used.
    verify_hash        bytea       UNIQUE CHECK (length(verify_hash) = 32),
    disabled_at        timestamptz,
    failed_logins      integer     NOT NULL DEFAULT 0,
    last_failed_at     timestamptz,
    CHECK ((tenant_id IS NULL) <> (msp_org_id IS NULL)),
    CHECK ((role IN ('msp_admin', 'msp_technician')) = (msp_org_id IS NOT NULL))
);
CREATE INDEX users_tenant ON users (tenant_id) WHERE tenant_id IS NOT NULL;
CREATE INDEX users_org ON users (msp_org_id) WHERE msp_org_id IS NOT NULL;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY user_isolation ON users
    USING (tenant_id = (SELECT mamori_current_tenant())
           OR msp_org_id = (SELECT mamori_current_org())
           OR id = (SELECT mamori_current_user()))
    WITH CHECK (tenant_id = (SELECT mamori_current_tenant())
           OR msp_org_id = (SELECT mamori_current_org()));

-- Which tenants an MSP technician may act on (MSP admins reach them all).
CREATE TABLE msp_tenant_access (
    msp_org_id  uuid        NOT NULL REFERENCES msp_orgs (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (msp_org_id, user_id, tenant_id)
);
ALTER TABLE msp_tenant_access ENABLE ROW LEVEL SECURITY;
ALTER TABLE msp_tenant_access FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON msp_tenant_access
    USING (msp_org_id = (SELECT mamori_current_org())) WITH CHECK (msp_org_id = (SELECT mamori_current_org()));

CREATE TABLE invitations (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        REFERENCES tenants (id) ON DELETE CASCADE,
    msp_org_id   uuid        REFERENCES msp_orgs (id) ON DELETE CASCADE,
    email        text        NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    role         text        NOT NULL CHECK (role IN ('msp_admin', 'msp_technician', 'tenant_admin', 'auditor')),
    token_hash   bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    invited_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    revoked_at   timestamptz,
    CHECK ((tenant_id IS NULL) <> (msp_org_id IS NULL)),
    CHECK ((role IN ('msp_admin', 'msp_technician')) = (msp_org_id IS NOT NULL))
);
ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY invitation_isolation ON invitations
    USING (tenant_id = (SELECT mamori_current_tenant()) OR msp_org_id = (SELECT mamori_current_org()))
    WITH CHECK (tenant_id = (SELECT mamori_current_tenant()) OR msp_org_id = (SELECT mamori_current_org()));

-- Opaque refresh tokens, stored as SHA-256 and rotated on every use. All the
-- tokens issued from one login form a family; presenting a token that was
-- already used revokes the whole family.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    family_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
-- No policy: the application role goes through the functions below.

-- The gateway's JWT signing keys (Ed25519). The private key is stored
-- encrypted (AES-256-GCM) under a key-encryption key that only the gateway
-- processes hold. Tokens signed by a retired key are refused.
CREATE TABLE signing_keys (
    kid                  text        PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 64),
    public_key           bytea       NOT NULL CHECK (length(public_key) = 32),
    private_key_wrapped  bytea       NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    retired_at           timestamptz
);
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_keys FORCE ROW LEVEL SECURITY;
-- No policy: see mamori_signing_keys() and friends.

-- Every admin action and every read of the operation log. Append-only for
-- the application role.
CREATE TABLE audit_log (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           uuid        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_id     uuid,
    actor_email  text        NOT NULL,
    actor_role   text        NOT NULL,
    action       text        NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target       text        NOT NULL DEFAULT '' CHECK (length(target) <= 200),
    details      jsonb       NOT NULL DEFAULT '{}',
    client_ip    inet,
    request_id   text        NOT NULL DEFAULT '' CHECK (length(request_id) <= 100),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_at ON audit_log (tenant_id, at DESC, id DESC);
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));

-- Operation-log search by device and by free text on the subject (paths,
-- titles, URLs) uses per-partition indexes built when a day is over; see
-- mamori_index_event_partitions().
CREATE EXTENSION IF NOT EXISTS pg_trgm;

GRANT SELECT, INSERT, UPDATE, DELETE ON msp_orgs, groups, users, msp_tenant_access, invitations TO mamori_app;
GRANT SELECT, INSERT ON audit_log TO mamori_app;

-- Login: the account behind an e-mail address, before any tenant is known.
CREATE FUNCTION mamori_user_for_login(login_email text)
    RETURNS TABLE (id uuid, password_hash text, tenant_id uuid, msp_org_id uuid, role text,
                   disabled boolean, failed_logins integer, last_failed_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT u.id, u.password_hash, u.tenant_id, u.msp_org_id, u.role, u.disabled_at IS NOT NULL,
                 u.failed_logins, u.last_failed_at
          FROM users u WHERE u.email = login_email $$;

-- Counts a failed password (or resets the count after a good one).
CREATE FUNCTION mamori_record_login(user_id uuid, success boolean) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ UPDATE users SET
              failed_logins = CASE WHEN success THEN 0 ELSE failed_logins + 1 END,
              last_failed_at = CASE WHEN success THEN last_failed_at ELSE now() END
          WHERE id = mamori_record_login.user_id $$;

-- Admits a login attempt, atomically: when the account has had
-- `free_failures` or more wrong passwords in a row, it must wait 2^(n-free)
-- seconds (at most `max_wait_s`) after the last one; the function returns
-- the seconds still to wait and counts nothing. Otherwise the attempt is
-- counted as a failure up front (so parallel guesses cannot all slip in) and
-- 0 is returned; a right password then resets the count.
CREATE FUNCTION mamori_begin_login(user_id uuid, free_failures integer, max_wait_s integer) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    u record;
    wait_s integer;
    elapsed integer;
BEGIN
    SELECT x.failed_logins, x.last_failed_at INTO u FROM users x WHERE x.id = mamori_begin_login.user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF u.failed_logins >= free_failures AND u.last_failed_at IS NOT NULL THEN
        wait_s := least(power(2, least(u.failed_logins - free_failures, 20))::integer, max_wait_s);
        elapsed := floor(extract(epoch FROM now() - u.last_failed_at))::integer;
        IF elapsed < wait_s THEN
            RETURN wait_s - elapsed;
        END IF;
    END IF;
    UPDATE users x SET failed_logins = x.failed_logins + 1, last_failed_at = now()
        WHERE x.id = mamori_begin_login.user_id;
    RETURN 0;
END
$$;
REVOKE ALL ON FUNCTION mamori_begin_login(uuid, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_begin_login(uuid, integer, integer) TO mamori_app;

-- Whether an e-mail address is taken (signup and invitations must not
-- create a second account with it).
CREATE FUNCTION mamori_email_taken(check_email text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT EXISTS (SELECT 1 FROM users u WHERE u.email = check_email) $$;

-- Marks the address whose verification secret hashes to `hash` verified.
CREATE FUNCTION mamori_verify_email(hash bytea) RETURNS uuid
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ UPDATE users SET email_verified_at = now(), verify_hash = NULL
          WHERE verify_hash = hash RETURNING id $$;

-- The pending invitation behind a secret.
CREATE FUNCTION mamori_invitation_by_hash(hash bytea)
    RETURNS TABLE (id uuid, tenant_id uuid, msp_org_id uuid, email text, role text,
                   expires_at timestamptz, accepted_at timestamptz, revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT i.id, i.tenant_id, i.msp_org_id, i.email, i.role, i.expires_at, i.accepted_at, i.revoked_at
          FROM invitations i WHERE i.token_hash = hash $$;

-- Refresh tokens.
CREATE FUNCTION mamori_issue_refresh_token(token_id uuid, family uuid, owner uuid, hash bytea, expires timestamptz)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
          VALUES (token_id, family, owner, hash, expires) $$;

-- Rotates the token whose hash is `old_hash` into a new one of the same
-- family. Returns 'ok' and the user, or says why not: 'unknown', 'expired',
-- 'revoked', or 'reused' (the token was already rotated: the whole family
-- is revoked, since either the holder or a thief has a copy).
CREATE FUNCTION mamori_rotate_refresh_token(old_hash bytea, new_id uuid, new_hash bytea, new_expires timestamptz)
    RETURNS TABLE (outcome text, user_id uuid, family_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
BEGIN
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = old_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::uuid, NULL::uuid;
        RETURN;
    END IF;
    IF t.used_at IS NOT NULL THEN
        UPDATE refresh_tokens r SET revoked_at = coalesce(r.revoked_at, now()) WHERE r.family_id = t.family_id;
        RETURN QUERY SELECT 'reused'::text, t.user_id, t.family_id;
        RETURN;
    END IF;
    IF t.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT 'revoked'::text, t.user_id, t.family_id;
        RETURN;
    END IF;
    IF t.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, t.user_id, t.family_id;
        RETURN;
    END IF;
    UPDATE refresh_tokens r SET used_at = now() WHERE r.id = t.id;
    INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
        VALUES (new_id, t.family_id, t.user_id, new_hash, new_expires);
    RETURN QUERY SELECT 'ok'::text, t.user_id, t.family_id;
END
$$;

-- Logout: revokes the family of the presented token. Returns whether the
-- token was known.
CREATE FUNCTION mamori_revoke_refresh_family(hash bytea) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    fam uuid;
BEGIN
    SELECT r.family_id INTO fam FROM refresh_tokens r WHERE r.token_hash = hash;
    IF fam IS NULL THEN
        RETURN false;
    END IF;
    UPDATE refresh_tokens r SET revoked_at = coalesce(r.revoked_at, now()) WHERE r.family_id = fam;
    RETURN true;
END
$$;

-- Signing keys.
CREATE FUNCTION mamori_signing_keys()
    RETURNS TABLE (kid text, public_key bytea, private_key_wrapped bytea, created_at timestamptz, retired_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT k.kid, k.public_key, k.private_key_wrapped, k.created_at, k.retired_at
          FROM signing_keys k ORDER BY k.created_at $$;

CREATE FUNCTION mamori_add_signing_key(new_kid text, public bytea, wrapped bytea) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ INSERT INTO signing_keys (kid, public_key, private_key_wrapped) VALUES (new_kid, public, wrapped) $$;

CREATE FUNCTION mamori_retire_signing_key(old_kid text) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ UPDATE signing_keys SET retired_at = now() WHERE kid = old_kid AND retired_at IS NULL RETURNING true $$;

-- The tenants an MSP organisation runs, with their device counts, for the
-- organisation's overview (devices are otherwise visible per tenant only).
-- The organisation is the transaction's own, set from a verified token.
CREATE FUNCTION mamori_msp_tenant_overview()
    RETURNS TABLE (tenant_id uuid, name text, created_at timestamptz, device_limit integer, devices bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT t.id, t.name, t.created_at, t.device_limit,
                 (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id AND d.revoked_at IS NULL)
          FROM tenants t
          WHERE t.msp_org_id IS NOT NULL AND t.msp_org_id = mamori_current_org()
          ORDER BY t.name, t.id $$;

-- An MSP organisation takes over the tenant whose handover code hashes to
-- `hash` (not expired, not already run by an MSP). Returns the tenant.
CREATE FUNCTION mamori_claim_tenant(hash bytea) RETURNS uuid
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ UPDATE tenants SET msp_org_id = mamori_current_org(), handover_hash = NULL, handover_expires_at = NULL
          WHERE handover_hash = hash AND handover_expires_at > now() AND msp_org_id IS NULL
            AND mamori_current_org() IS NOT NULL
          RETURNING id $$;

-- Ends every session of a user (disabled accounts, password changes).
CREATE FUNCTION mamori_revoke_user_sessions(owner uuid) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$ UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = owner $$;

REVOKE ALL ON FUNCTION mamori_claim_tenant(bytea), mamori_revoke_user_sessions(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_claim_tenant(bytea), mamori_revoke_user_sessions(uuid) TO mamori_app;

REVOKE ALL ON FUNCTION mamori_user_for_login(text), mamori_record_login(uuid, boolean), mamori_email_taken(text),
    mamori_verify_email(bytea), mamori_invitation_by_hash(bytea),
    mamori_issue_refresh_token(uuid, uuid, uuid, bytea, timestamptz),
    mamori_rotate_refresh_token(bytea, uuid, bytea, timestamptz), mamori_revoke_refresh_family(bytea),
    mamori_signing_keys(), mamori_add_signing_key(text, bytea, bytea), mamori_retire_signing_key(text),
    mamori_msp_tenant_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_user_for_login(text), mamori_record_login(uuid, boolean), mamori_email_taken(text),
    mamori_verify_email(bytea), mamori_invitation_by_hash(bytea),
    mamori_issue_refresh_token(uuid, uuid, uuid, bytea, timestamptz),
    mamori_rotate_refresh_token(bytea, uuid, bytea, timestamptz), mamori_revoke_refresh_family(bytea),
    mamori_signing_keys(), mamori_add_signing_key(text, bytea, bytea), mamori_retire_signing_key(text),
    mamori_msp_tenant_overview() TO mamori_app;

-- Row-level security checks only the new row; these triggers pin what no
-- request may change. A tenant joins an MSP only through
-- mamori_claim_tenant() (or is created by it), and leaves only by its own
-- MSP's release; a user never moves between tenants and organisations.
CREATE FUNCTION mamori_guard_tenant_org() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_user <> 'mamori_app' THEN
        RETURN NEW; -- the owner: migrations, SECURITY DEFINER functions
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.msp_org_id IS NOT NULL AND NEW.msp_org_id IS DISTINCT FROM mamori_current_org() THEN
            RAISE EXCEPTION 'a tenant can only be created for the acting MSP organisation';
        END IF;
    ELSIF NEW.msp_org_id IS DISTINCT FROM OLD.msp_org_id
          AND NOT (NEW.msp_org_id IS NULL AND OLD.msp_org_id = mamori_current_org()) THEN
        RAISE EXCEPTION 'only the running MSP may release a tenant; joining one needs a handover code';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tenants_guard_org BEFORE INSERT OR UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION mamori_guard_tenant_org();

CREATE FUNCTION mamori_guard_user_home() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_user = 'mamori_app'
       AND (NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.msp_org_id IS DISTINCT FROM OLD.msp_org_id
            OR NEW.email IS DISTINCT FROM OLD.email) THEN
        RAISE EXCEPTION 'a user''s tenant, organisation and e-mail address do not change';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_guard_home BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION mamori_guard_user_home();
