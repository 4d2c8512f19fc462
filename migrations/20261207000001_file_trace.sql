-- The file trace: where each file went (created, copied, renamed, moved,
-- copied to a USB stick, deleted) and where its content was seen again,
-- across the tenant's PCs. The writer adds one row per file event, in the
-- same transaction as the event; the gateway walks the rows by device and
-- path and by content hash, and shows the events they point to.
CREATE TABLE file_trace (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    ts         timestamptz NOT NULL,
    event_id   uuid        NOT NULL,
    device_id  uuid        NOT NULL,
    kind       smallint    NOT NULL,
    path       text        NOT NULL,
    -- Of a copy, move or rename; '' for the others.
    target     text        NOT NULL,
    -- SHA-256 of the content, where the agent hashed it.
    sha256     bytea       CHECK (sha256 IS NULL OR length(sha256) = 32),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX file_trace_path ON file_trace (tenant_id, device_id, path);
CREATE INDEX file_trace_target ON file_trace (tenant_id, device_id, target) WHERE target <> '';
CREATE INDEX file_trace_sha256 ON file_trace (tenant_id, sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX file_trace_ts ON file_trace (tenant_id, ts);

ALTER TABLE file_trace ENABLE ROW LEVEL SECURITY;
ALTER TABLE file_trace FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON file_trace
    USING (tenant_id = (SELECT mamori_current_tenant())) WITH CHECK (tenant_id = (SELECT mamori_current_tenant()));
GRANT SELECT, INSERT ON file_trace TO mamori_app;

-- Retention, as for the events: each tenant's rows older than its
-- `retention_days`, at most `batch` per tenant per call. The writer calls
-- it hourly beside mamori_apply_retention.
CREATE FUNCTION mamori_trim_file_trace(batch integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    t record;
    deleted bigint := 0;
    n bigint;
BEGIN
    IF batch < 1 OR batch > 1000000 THEN
        RAISE EXCEPTION 'retention batch % is out of bounds', batch;
    END IF;
    FOR t IN SELECT id, retention_days FROM tenants LOOP
        DELETE FROM file_trace f
        WHERE (f.tenant_id, f.event_id) IN (
            SELECT x.tenant_id, x.event_id FROM file_trace x
            WHERE x.tenant_id = t.id AND x.ts < now() - make_interval(days => t.retention_days)
            LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
    END LOOP;
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION mamori_trim_file_trace(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_trim_file_trace(integer) TO mamori_app;

