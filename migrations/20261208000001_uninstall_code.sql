-- The tenant's agent uninstall code: its SHA-256 (the code itself is shown
-- to the administrator once). Agents receive the hash with their policy
-- and refuse to be removed without the code, offline too.
ALTER TABLE tenants
    ADD COLUMN uninstall_code_hash bytea
        CHECK (uninstall_code_hash IS NULL OR length(uninstall_code_hash) = 32);
