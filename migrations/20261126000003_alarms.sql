-- Alarms: one row per incident (the same rule on the same device within a
-- window becomes one alarm with a count). The alerting service writes
-- them; the gateway lists them and draws the violation calendar from them.
CREATE TABLE alarms (
    tenant_id        uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               uuid        NOT NULL,
    category         text        NOT NULL CHECK (category IN (
                         'environment_change', 'new_app', 'banned_app', 'after_hours',
                         'confidential_folder', 'mass_print', 'banned_web', 'device_control',
                         'unauthorized_pc')),
    device_id        uuid,
    os_user          text        NOT NULL DEFAULT '',
    summary          text        NOT NULL CHECK (length(summary) <= 1000),
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    count            integer     NOT NULL DEFAULT 1 CHECK (count > 0),
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged')),
    acknowledged_by  uuid,
    acknowledged_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX alarms_first_at ON alarms (tenant_id, first_at);
CREATE INDEX alarms_open ON alarms (tenant_id) WHERE status = 'open';

ALTER TABLE alarms ENABLE ROW LEVEL SECURITY;
ALTER TABLE alarms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON alarms
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));
GRANT SELECT, INSERT, UPDATE ON alarms TO mamori_app;

-- The MSP overview, now with open alarms.
DROP FUNCTION mamori_msp_tenant_overview();
CREATE FUNCTION mamori_msp_tenant_overview()
    RETURNS TABLE (tenant_id uuid, name text, created_at timestamptz, device_limit integer, devices bigint,
                   open_alarms bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT t.id, t.name, t.created_at, t.device_limit,
                 (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id AND d.revoked_at IS NULL),
                 (SELECT count(*) FROM alarms a WHERE a.tenant_id = t.id AND a.status = 'open')
          FROM tenants t
          WHERE t.msp_org_id IS NOT NULL AND t.msp_org_id = mamori_current_org()
          ORDER BY t.name, t.id $$;
REVOKE ALL ON FUNCTION mamori_msp_tenant_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_msp_tenant_overview() TO mamori_app;
