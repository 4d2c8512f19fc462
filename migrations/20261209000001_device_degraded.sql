-- The sources the device's agent says work in a degraded mode (the Windows
-- agent polling processes because ETW cannot be used), from its latest
-- hello; '' when none. A fact of the device, like its agent version.
ALTER TABLE devices
    ADD COLUMN degraded text NOT NULL DEFAULT ''
        CHECK (char_length(degraded) <= 1024);
