-- The MSP overview, now with each tenant's last violation (the latest
-- occurrence of any of its alarms), so a technician sees at a glance which
-- customer had something happen last night.
CREATE INDEX alarms_last_at ON alarms (tenant_id, last_at);

DROP FUNCTION mamori_msp_tenant_overview();
CREATE FUNCTION mamori_msp_tenant_overview()
    RETURNS TABLE (tenant_id uuid, name text, created_at timestamptz, device_limit integer, devices bigint,
                   open_alarms bigint, last_alarm_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT t.id, t.name, t.created_at, t.device_limit,
                 (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id AND d.revoked_at IS NULL),
                 (SELECT count(*) FROM alarms a WHERE a.tenant_id = t.id AND a.status = 'open'),
                 (SELECT max(a.last_at) FROM alarms a WHERE a.tenant_id = t.id)
          FROM tenants t
          WHERE t.msp_org_id IS NOT NULL AND t.msp_org_id = mamori_current_org()
          ORDER BY t.name, t.id $$;
REVOKE ALL ON FUNCTION mamori_msp_tenant_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_msp_tenant_overview() TO mamori_app;
