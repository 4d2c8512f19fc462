-- Password reset by e-mail (issue 14). The code is mailed; only its
-- SHA-256 is stored, it is good for one use within its lifetime, and a new
-- request replaces an older code. Reset mails to one address are capped
-- per hour, so the endpoint cannot be used to flood a mailbox.
ALTER TABLE users
    ADD COLUMN reset_hash       bytea UNIQUE CHECK (length(reset_hash) = 32),
    ADD COLUMN reset_expires_at timestamptz,
    ADD COLUMN reset_mails      integer NOT NULL DEFAULT 0,
    ADD COLUMN reset_window_at  timestamptz;

-- Starts a reset for the account with this address when there is one, it
-- is not disabled, and fewer than `per_hour` reset mails went to it in the
-- hour: stores the code's hash and returns the user id. Otherwise returns
-- NULL and stores nothing. The caller answers the same either way.
CREATE FUNCTION mamori_begin_password_reset(reset_email text, hash bytea, valid_for interval, per_hour integer)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    u record;
BEGIN
    SELECT x.id, x.disabled_at, x.reset_mails, x.reset_window_at INTO u
        FROM users x WHERE x.email = reset_email FOR UPDATE;
    IF NOT FOUND OR u.disabled_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF u.reset_window_at IS NULL OR u.reset_window_at <= now() - interval '1 hour' THEN
        u.reset_mails := 0;
        UPDATE users SET reset_mails = 0, reset_window_at = now() WHERE id = u.id;
    END IF;
    IF u.reset_mails >= per_hour THEN
        RETURN NULL;
    END IF;
    UPDATE users SET reset_hash = hash, reset_expires_at = now() + valid_for,
                     reset_mails = reset_mails + 1
        WHERE id = u.id;
    RETURN u.id;
END
$$;

-- The address whose current, unused reset code hashes to `hash` (NULL:
-- none), so the new password can be checked against it before it is set.
CREATE FUNCTION mamori_password_reset_email(hash bytea) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT u.email FROM users u
          WHERE u.reset_hash = hash AND u.reset_expires_at > now() AND u.disabled_at IS NULL $$;

-- Finishes a reset: sets the new password, uses up the code, confirms the
-- address (the mail reached it), forgets failed logins and ends every
-- session. Returns the user id, or NULL when the code is unknown, used,
-- expired or the account disabled.
CREATE FUNCTION mamori_finish_password_reset(hash bytea, new_password_hash text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    uid uuid;
BEGIN
    UPDATE users SET password_hash = new_password_hash, reset_hash = NULL, reset_expires_at = NULL,
                     failed_logins = 0, last_failed_at = NULL,
                     email_verified_at = coalesce(email_verified_at, now()), verify_hash = NULL
        WHERE reset_hash = hash AND reset_expires_at > now() AND disabled_at IS NULL
        RETURNING id INTO uid;
    IF uid IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM mamori_revoke_user_sessions(uid);
    RETURN uid;
END
$$;

REVOKE ALL ON FUNCTION mamori_begin_password_reset(text, bytea, interval, integer),
    mamori_password_reset_email(bytea), mamori_finish_password_reset(bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mamori_begin_password_reset(text, bytea, interval, integer),
    mamori_password_reset_email(bytea), mamori_finish_password_reset(bytea, text) TO mamori_app;
