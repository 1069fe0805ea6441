-- izrelay local database: the complete fresh schema.
-- The store issue fills this in (vaccination, notification_log, attempt, iis_endpoint,
-- dataverse_outbox, sync_cursor, audit_event); until then the foundation ships only the
-- version marker so that a database created now is recognised and upgraded later.
PRAGMA user_version = 0;
