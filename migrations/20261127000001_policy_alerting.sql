-- Policies (issue 4): documents attached to the tenant, a group or a device,
-- every change a new version; the alerting service's rule state and its
-- notification outbox.

-- Bumped on every policy change in the tenant (and on anything else that
-- changes a device's effective policy, such as moving it to another group).
-- Agents report the revision they enforce; ingest pushes the effective
-- policy to agents that are behind.
ALTER TABLE tenants ADD COLUMN policy_revision bigint NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN policy_error text CHECK (length(policy_error) <= 500);

CREATE TABLE policies (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    scope       text        NOT NULL CHECK (scope IN ('tenant', 'group', 'device')),
    -- The group or device; NULL for the tenant's own policy.
    target_id   uuid,
    version     integer     NOT NULL CHECK (version > 0),
    -- NULL: cleared (the target inherits everything); the history stays.
    document    jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  uuid,
    PRIMARY KEY (tenant_id, id),
    CHECK ((scope = 'tenant') = (target_id IS NULL))
);
CREATE UNIQUE INDEX policies_target
    ON policies (tenant_id, scope, coalesce(target_id, '00000000-0000-0000-0000-000000000000'));

CREATE TABLE policy_versions (
    tenant_id   uuid        NOT NULL,
    policy_id   uuid        NOT NULL,
    version     integer     NOT NULL,
    document    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid,
    PRIMARY KEY (tenant_id, policy_id, version),
    FOREIGN KEY (tenant_id, policy_id) REFERENCES policies (tenant_id, id) ON DELETE CASCADE
);

-- Where notifications go besides e-mail: webhook endpoints with their HMAC
-- secret, wrapped under the key-encryption key.
CREATE TABLE webhooks (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url             text        NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    secret_wrapped  bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Alarm deduplication: an open alarm of the same rule and key (device, user,
-- rule detail) within the window takes the count instead of a new row.
ALTER TABLE alarms ADD COLUMN dedupe_key text NOT NULL DEFAULT '' CHECK (length(dedupe_key) <= 600);
ALTER TABLE alarms ADD COLUMN details jsonb NOT NULL DEFAULT '{}';
CREATE INDEX alarms_dedupe ON alarms (tenant_id, dedupe_key, last_at DESC) WHERE status = 'open';

-- The events each rule has counted: makes a replayed stream entry count
-- once, and holds windowed state (pages printed in the last hour) across
-- restarts. Old rows are pruned by the alerting service.
CREATE TABLE alert_hits (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    rule        text        NOT NULL,
    event_id    uuid        NOT NULL,
    key         text        NOT NULL,
    at          timestamptz NOT NULL,
    amount      integer     NOT NULL DEFAULT 1,
    alarm_id    uuid,
    PRIMARY KEY (tenant_id, rule, event_id)
);
CREATE INDEX alert_hits_window ON alert_hits (tenant_id, rule, key, at);
CREATE INDEX alert_hits_at ON alert_hits (at);

-- Apps seen in a tenant (for "new app launched").
CREATE TABLE known_apps (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    app         text        NOT NULL,
    first_seen  timestamptz NOT NULL,
    device_id   uuid,
    PRIMARY KEY (tenant_id, app)
);

-- The transactional outbox: written in the alarm's transaction, sent by the
-- alerting service, marked sent afterwards. A crash before the mark sends
-- again; the Message-ID / delivery id is the row id so receivers can tell.
CREATE TABLE notification_outbox (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    alarm_id        uuid,
    channel         text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    -- An e-mail address or a webhook id.
    recipient       text        NOT NULL CHECK (length(recipient) BETWEEN 1 AND 320),
    -- Digest rows wait for their hour and go out as one message.
    digest          boolean     NOT NULL DEFAULT false,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    sent_at         timestamptz,
    last_error      text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at) WHERE sent_at IS NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['policies', 'policy_versions', 'webhooks', 'alert_hits', 'known_apps',
                             'notification_outbox'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = (SELECT mamori_current_tenant()))'
                       ' WITH CHECK (tenant_id = (SELECT mamori_current_tenant()))', t);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE ON policies, webhooks, notification_outbox TO mamori_app;
GRANT SELECT, INSERT ON policy_versions, known_apps TO mamori_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_hits TO mamori_app;
GRANT DELETE ON webhooks TO mamori_app;

-- The notifier works across tenants: it leases due outbox rows (the lease
-- ends a crashed sender's claim) without seeing anything else of a tenant.
CREATE FUNCTION mamori_lease_notifications(max_rows integer, lease_s integer)
    RETURNS TABLE (tenant_id uuid, id uuid, channel text, recipient text, digest boolean,
                   payload jsonb, attempts integer)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
    UPDATE notification_outbox o
       SET next_attempt_at = now() + make_interval(secs => lease_s)
      FROM (SELECT n.tenant_id, n.id FROM notification_outbox n
             WHERE n.sent_at IS NULL AND n.next_attempt_at <= now()
             ORDER BY n.next_attempt_at
             LIMIT max_rows
             FOR UPDATE SKIP LOCKED) due
     WHERE o.tenant_id = due.tenant_id AND o.id = due.id
    RETURNING o.tenant_id, o.id, o.channel, o.recipient, o.digest, o.payload, o.attempts $$;

-- Prunes rule state older than `keep` for every tenant.
CREATE FUNCTION mamori_prune_alert_hits(older_than timestamptz, max_rows integer) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
    WITH gone AS (
        DELETE FROM alert_hits h
         WHERE (h.tenant_id, h.rule, h.event_id) IN (
               SELECT x.tenant_id, x.rule, x.event_id FROM alert_hits x
                WHERE x.at < older_than LIMIT max_rows)
        RETURNING 1)
    SELECT count(*) FROM gone $$;

REVOKE ALL ON FUNCTION mamori_lease_notifications(integer, integer), mamori_prune_alert_hits(timestamptz, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_lease_notifications(integer, integer), mamori_prune_alert_hits(timestamptz, integer)
    TO mamori_app;

-- Ingest's safety net behind the change notices (which Redis may drop while
-- a subscriber reconnects): the current revision of the tenants it serves.
CREATE FUNCTION mamori_policy_revisions(tenant_ids uuid[])
    RETURNS TABLE (tenant_id uuid, policy_revision bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT t.id, t.policy_revision FROM tenants t WHERE t.id = ANY(tenant_ids) $$;
REVOKE ALL ON FUNCTION mamori_policy_revisions(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_policy_revisions(uuid[]) TO mamori_app;

-- MSP policy templates: one document kept by an MSP organisation, applied
-- to many of its tenants (as their tenant policy); a tenant whose policy no
-- longer equals the template has drifted.
CREATE TABLE policy_templates (
    msp_org_id  uuid        NOT NULL REFERENCES msp_orgs (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version     integer     NOT NULL CHECK (version > 0),
    document    jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  uuid,
    PRIMARY KEY (msp_org_id, id),
    CONSTRAINT policy_templates_name UNIQUE (msp_org_id, name)
);
ALTER TABLE policy_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON policy_templates
    USING (msp_org_id = (SELECT mamori_current_org())) WITH CHECK (msp_org_id = (SELECT mamori_current_org()));
GRANT SELECT, INSERT, UPDATE ON policy_templates TO mamori_app;

-- Which template (and its version) a tenant policy was last applied from,
-- and the policy version that apply wrote (a later version means the tenant
-- changed it since).
ALTER TABLE policies ADD COLUMN template_id uuid;
ALTER TABLE policies ADD COLUMN template_version integer;
ALTER TABLE policies ADD COLUMN template_policy_version integer;
