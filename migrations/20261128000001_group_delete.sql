-- Deleting an empty group takes its policy with it (the versions follow by
-- cascade; every version's document stays in the audit log). Nothing else
-- deletes policies.
GRANT DELETE ON policies TO mamori_app;
