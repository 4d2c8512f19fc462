-- The event spine: tenants, enrollment tokens, devices and the partitioned
-- events table, all under row-level security for the application role.
--
-- The services connect as the owner of these objects and `SET ROLE
-- mamori_app` on every connection: mamori_app owns nothing, is no superuser
-- and has no BYPASSRLS, so every query it runs is filtered by the policies
-- below. The tenant of a transaction is `set_config('mamori.tenant_id', ..,
-- true)`; with none set, the policies match no row at all. The policies call
-- it through a scalar subquery so it runs once per statement (an InitPlan),
-- not once per row.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mamori_app') THEN
        CREATE ROLE mamori_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

-- Lets a non-superuser owner switch to the application role.
GRANT mamori_app TO CURRENT_USER;

CREATE FUNCTION mamori_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('mamori.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE enrollment_tokens (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    -- SHA-256 of the secret; the secret itself is shown once and never stored.
    token_hash  bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    max_uses    integer     CHECK (max_uses > 0),
    uses        integer     NOT NULL DEFAULT 0,
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX enrollment_tokens_id ON enrollment_tokens (id);

CREATE TABLE devices (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    machine_id      text        NOT NULL,
    instance_id     text        NOT NULL,
    hostname        text        NOT NULL,
    os_name         text        NOT NULL,
    os_version      text        NOT NULL,
    agent_version   text        NOT NULL,
    -- SHA-256 of the device credential.
    credential_hash bytea       NOT NULL UNIQUE CHECK (length(credential_hash) = 32),
    enrolled_at     timestamptz NOT NULL DEFAULT now(),
    enrolled_with   uuid,
    last_seen_at    timestamptz,
    revoked_at      timestamptz,
    -- Set when another installation already claimed this machine id (a
    -- cloned VM image): both devices are kept and the clone is reported.
    clone_of        uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, enrolled_with) REFERENCES enrollment_tokens (tenant_id, id) ON DELETE SET NULL (enrolled_with)
);
CREATE UNIQUE INDEX devices_id ON devices (id);
CREATE INDEX devices_machine ON devices (tenant_id, machine_id);

-- One row per operation-log event. Range-partitioned by day on the event's
-- corrected time; tenant_id leads every key. The primary key makes writes
-- idempotent: a replayed event (same tenant, id and time) is not stored twice.
CREATE TABLE events (
    tenant_id   uuid        NOT NULL,
    ts          timestamptz NOT NULL,
    id          uuid        NOT NULL,
    device_id   uuid        NOT NULL,
    kind        smallint    NOT NULL,
    os_user     text        NOT NULL,
    -- The executable, path, URL host or device the event is about.
    subject     text        NOT NULL,
    received_at timestamptz NOT NULL,
    -- The protobuf-encoded mamori.agent.v1.Event without the fields stored
    -- in columns (id, occurred_at_us, os_user).
    payload     bytea       NOT NULL,
    PRIMARY KEY (tenant_id, ts, id)
) PARTITION BY RANGE (ts);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = (SELECT mamori_current_tenant())) WITH CHECK (id = (SELECT mamori_current_tenant()));

ALTER TABLE enrollment_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE enrollment_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON enrollment_tokens
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));

ALTER TABLE devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE devices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON devices
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));

GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, enrollment_tokens, devices TO mamori_app;
-- The operation log is append-only for the application role.
GRANT SELECT, INSERT ON events TO mamori_app;

-- Creates the daily partitions of `events` covering [from_day, to_day].
-- SECURITY DEFINER: the application role may add partitions, nothing else.
CREATE FUNCTION mamori_ensure_event_partitions(from_day date, to_day date) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    d date;
    created integer := 0;
    part text;
BEGIN
    IF to_day < from_day OR to_day - from_day > 800 THEN
        RAISE EXCEPTION 'partition range % .. % is out of bounds', from_day, to_day;
    END IF;
    d := from_day;
    WHILE d <= to_day LOOP
        part := 'events_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                    part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                -- Another writer created it first.
                NULL;
            END;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Authentication lookups that must work before the tenant is known. Each
-- returns only what the caller proves it may see (it holds the secret).
CREATE FUNCTION mamori_authenticate_device(credential_hash bytea)
    RETURNS TABLE (tenant_id uuid, device_id uuid, revoked boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT d.tenant_id, d.id, d.revoked_at IS NOT NULL FROM devices d
          WHERE d.credential_hash = mamori_authenticate_device.credential_hash $$;

CREATE FUNCTION mamori_tenant_of_enrollment_token(token_hash bytea)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT t.tenant_id FROM enrollment_tokens t
          WHERE t.token_hash = mamori_tenant_of_enrollment_token.token_hash $$;

-- Devices revoked at or after `since`, for ingest to cut their streams.
CREATE FUNCTION mamori_revoked_devices_since(since timestamptz)
    RETURNS TABLE (device_id uuid, revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT d.id, d.revoked_at FROM devices d WHERE d.revoked_at >= since $$;

-- Operator look-ups by object id alone (the `mamori token/device revoke`
-- commands); they reveal only the owning tenant of an id the caller names.
CREATE FUNCTION mamori_tenant_of_token_id(token_id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT t.tenant_id FROM enrollment_tokens t WHERE t.id = token_id $$;

CREATE FUNCTION mamori_tenant_of_device_id(device_id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT d.tenant_id FROM devices d WHERE d.id = device_id $$;

REVOKE ALL ON FUNCTION mamori_ensure_event_partitions(date, date), mamori_authenticate_device(bytea),
    mamori_tenant_of_enrollment_token(bytea), mamori_revoked_devices_since(timestamptz),
    mamori_tenant_of_token_id(uuid), mamori_tenant_of_device_id(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_ensure_event_partitions(date, date), mamori_authenticate_device(bytea),
    mamori_tenant_of_enrollment_token(bytea), mamori_revoked_devices_since(timestamptz),
    mamori_tenant_of_token_id(uuid), mamori_tenant_of_device_id(uuid) TO mamori_app;
CREATE INDEX devices_revoked ON devices (revoked_at) WHERE revoked_at IS NOT NULL;
