-- Upkeep of the operation log: search indexes on finished days, and
-- retention.
--
-- The partition of the current day takes the whole insert load, so it has
-- only its primary key (tenant_id, ts, id): every secondary index costs the
-- writer dearly (measured on this schema: a (tenant_id, device_id, ts)
-- btree makes batched inserts 1.7 times slower, a trigram GIN on subject
-- 4.5 times). Once a day is over its partition gets the search indexes in
-- one bulk build, which is far cheaper than maintaining them row by row.
-- Searches over today scan its primary key; older days use the indexes.
CREATE FUNCTION mamori_index_event_partitions(before_day date) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    part record;
    built integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') < before_day
          AND (to_regclass(c.relname || '_device') IS NULL OR to_regclass(c.relname || '_subject') IS NULL)
        ORDER BY c.relname DESC
    LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (tenant_id, device_id, ts)',
                       part.relname || '_device', part.relname);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING gin (subject gin_trgm_ops)',
                       part.relname || '_subject', part.relname);
        built := built + 1;
    END LOOP;
    RETURN built;
END
$$;

REVOKE ALL ON FUNCTION mamori_index_event_partitions(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_index_event_partitions(date) TO mamori_app;

-- Retention of the operation log: each tenant keeps its events for its
-- `retention_days` (90 days to 7 years). Whole daily partitions older than
-- the longest retention of any tenant are dropped; within the others, a
-- tenant's expired rows are deleted in bounded batches. The writer calls
-- this hourly; the application role cannot delete events itself.
CREATE FUNCTION mamori_apply_retention(batch integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public
    AS $$
DECLARE
    longest integer;
    part record;
    t record;
    deleted bigint := 0;
    n bigint;
BEGIN
    IF batch < 1 OR batch > 1000000 THEN
        RAISE EXCEPTION 'retention batch % is out of bounds', batch;
    END IF;
    SELECT coalesce(max(retention_days), 2557) INTO longest FROM tenants;
    -- Partitions named events_YYYYMMDD hold that day.
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') + 1 < (now() - make_interval(days => longest))::date
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
    END LOOP;
    FOR t IN SELECT id, retention_days FROM tenants WHERE retention_days < longest LOOP
        DELETE FROM events e
        USING (SELECT x.tenant_id, x.ts, x.id FROM events x
               WHERE x.tenant_id = t.id AND x.ts < now() - make_interval(days => t.retention_days)
               LIMIT batch) old
        WHERE e.tenant_id = old.tenant_id AND e.ts = old.ts AND e.id = old.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
    END LOOP;
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION mamori_apply_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_apply_retention(integer) TO mamori_app;

-- Free-text search on the subject. The trigram indexes cannot serve a
-- search made under row-level security: ILIKE is not a leakproof operator,
-- so PostgreSQL evaluates it only after the policy and never as an index
-- condition (measured: a sequential scan of every partition, 6 s on 8.5
-- million rows, instead of a bitmap scan of the trigram index). This
-- function runs as the owner and applies the tenant of the transaction
-- itself, exactly as the policy would; it returns the keys of the newest
-- matching events, which the caller then reads under row-level security.
-- Ordered index scans are off inside it so the planner takes the trigram
-- bitmap rather than walking the primary key hoping for early matches.
CREATE FUNCTION mamori_events_matching(pattern text, from_ts timestamptz, to_ts timestamptz,
                                       device uuid, os_user text, kinds smallint[], grp uuid,
                                       max_rows integer)
    RETURNS TABLE (ts timestamptz, id uuid)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public SET enable_indexscan = off
    AS $$
BEGIN
    IF mamori_current_tenant() IS NULL THEN
        RETURN;
    END IF;
    IF max_rows < 1 OR max_rows > 100000 THEN
        RAISE EXCEPTION 'max_rows % is out of bounds', max_rows;
    END IF;
    -- EXECUTE plans with the actual values: the pattern decides the plan,
    -- and the filters that are not given fold away.
    RETURN QUERY EXECUTE
        'SELECT e.ts, e.id FROM events e
         WHERE e.tenant_id = $1 AND e.ts >= $2 AND e.ts < $3 AND e.subject ILIKE $4
           AND ($5::uuid IS NULL OR e.device_id = $5)
           AND ($6::text IS NULL OR e.os_user = $6)
           AND ($7::smallint[] IS NULL OR e.kind = ANY($7))
           AND ($8::uuid IS NULL OR e.device_id IN (
                SELECT d.id FROM devices d WHERE d.tenant_id = $1 AND d.group_id IN (
                    WITH RECURSIVE sub(id) AS (SELECT $8::uuid
                        UNION SELECT c.id FROM groups c JOIN sub ON c.parent_id = sub.id WHERE c.tenant_id = $1)
                    SELECT sub.id FROM sub)))
         ORDER BY e.ts DESC, e.id DESC LIMIT $9'
        USING mamori_current_tenant(), from_ts, to_ts, pattern, device, os_user, kinds, grp, max_rows;
END
$$;

REVOKE ALL ON FUNCTION mamori_events_matching(text, timestamptz, timestamptz, uuid, text, smallint[], uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_events_matching(text, timestamptz, timestamptz, uuid, text, smallint[], uuid, integer) TO mamori_app;
