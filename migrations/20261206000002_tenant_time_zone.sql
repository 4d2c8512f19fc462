-- The tenant's time zone (issue 14): the violation calendar's days and the
-- console's default. The gateway checks names against pg_timezone_names.
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'Asia/Tokyo'
    CHECK (length(time_zone) BETWEEN 1 AND 64);
