-- Since this version the writer stores each event's subject once, in the
-- `subject` column, and leaves it out of the payload's body (8 % fewer bytes
-- per stored event in the benchmark's mix). Readers put it back with
-- mamori_proto::wire::restore_subject; rows written before keep it in both
-- places, and restore_subject leaves them as they are.
COMMENT ON COLUMN events.payload IS
    'The protobuf-encoded mamori.agent.v1.Event without the fields stored in columns: id, occurred_at_us, os_user, and the body''s subject field (put back by mamori_proto::wire::restore_subject; older rows still hold it).';
