-- izrelay local database: the complete fresh schema (store/schema.rs runs it on a new file and
-- upgrades older files step by step). Times are INTEGER milliseconds since 1970 UTC.
-- Every audit query is an index lookup: patient MRN, vaccination id, MSH-10, status, provider
-- (of a message), created time, CVX and lot each have an index.

-- The local copy of every record received (Dataverse pull or file import).
CREATE TABLE vaccination (
    id              TEXT PRIMARY KEY,          -- vaccination_id (ORC-3)
    provider_id     TEXT,                      -- IIS account number: picks the IIS
    patient_id      TEXT NOT NULL,             -- MRN (PID-3)
    cvx             TEXT NOT NULL,
    lot             TEXT,
    completed       INTEGER NOT NULL,
    modified_on     TEXT,                      -- source's modified time (RFC 3339)
    record_hash     BLOB NOT NULL,             -- SHA-256 of record_json: "imported twice" is a no-op
    record_json     TEXT NOT NULL,             -- the canonical record
    received_at     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX vaccination_patient ON vaccination(patient_id);
CREATE INDEX vaccination_cvx ON vaccination(cvx);
CREATE INDEX vaccination_lot ON vaccination(lot);

-- One row per generated message: the outbox and the audit trail (store/outbox.rs).
-- The status CHECK is a chain of `=` rather than `IN (...)`: SQLite checks an IN list of more
-- than two values by building a temporary index, once for every row inserted or updated.
CREATE TABLE notification_log (
    id              INTEGER PRIMARY KEY,
    vaccination_id  TEXT NOT NULL REFERENCES vaccination(id),
    provider_id     TEXT,
    control_id      TEXT UNIQUE,               -- MSH-10; NULL for an invalid record
    status          TEXT NOT NULL CHECK (status = 'invalid' OR status = 'queued'
                        OR status = 'sending' OR status = 'accepted' OR status = 'rejected'
                        OR status = 'failed' OR status = 'superseded'),
    message         TEXT,                      -- the VXU (CR-separated); NULL once purged
    reasons         TEXT,                      -- JSON: why invalid, or why failed
    record_hash     BLOB NOT NULL,             -- the record version this message was built from
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    ack_code        TEXT,                      -- MSA-1
    ack             TEXT,                      -- raw ACK
    ack_errors      TEXT,                      -- JSON of the parsed ERR segments
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,                   -- accepted / rejected / failed / superseded
    synced_at       INTEGER,                   -- written back to Dataverse
    purged_at       INTEGER
) STRICT;
CREATE INDEX notification_log_vaccination ON notification_log(vaccination_id, id);
CREATE INDEX notification_log_status ON notification_log(status, next_attempt_at);
CREATE INDEX notification_log_provider ON notification_log(provider_id, status);
CREATE INDEX notification_log_created ON notification_log(created_at);

-- Every send try, with its result.
CREATE TABLE attempt (
    id              INTEGER PRIMARY KEY,
    log_id          INTEGER NOT NULL REFERENCES notification_log(id),
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER,
    http_status     INTEGER,
    outcome         TEXT NOT NULL,
    error           TEXT
) STRICT;
CREATE INDEX attempt_log ON attempt(log_id);

-- IIS endpoints and their sealed credentials, by provider id (the forwarder issue).
CREATE TABLE iis_endpoint (
    provider_id     TEXT PRIMARY KEY,
    endpoint        TEXT NOT NULL,
    facility_id     TEXT,
    user_name       TEXT NOT NULL,
    password_sealed BLOB NOT NULL,             -- AES-256-GCM: nonce || ciphertext || tag
    allow_insecure  INTEGER NOT NULL DEFAULT 0,
    paused          INTEGER NOT NULL DEFAULT 0,
    paused_reason   TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Outcomes waiting to be written back to Dataverse (the Dataverse issue).
CREATE TABLE dataverse_outbox (
    id              INTEGER PRIMARY KEY,
    log_id          INTEGER REFERENCES notification_log(id),
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    done_at         INTEGER
) STRICT;
CREATE INDEX dataverse_outbox_due ON dataverse_outbox(done_at, next_attempt_at);

-- Incremental pull positions (delta links, watermarks).
CREATE TABLE sync_cursor (
    name            TEXT PRIMARY KEY,
    value           TEXT NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Administrative actions: imports, regenerations, credential changes, key rotation, purges.
CREATE TABLE audit_event (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    action          TEXT NOT NULL,
    subject         TEXT,
    detail          TEXT
) STRICT;
CREATE INDEX audit_event_at ON audit_event(at);

-- Other sealed secrets (the Dataverse client secret), AES-256-GCM with the name as associated
-- data, like iis_endpoint.password_sealed. Added in version 2.
CREATE TABLE secret (
    name            TEXT PRIMARY KEY,
    sealed          BLOB NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Records that came from Dataverse: the row's ETag and modified time as last read, and the
-- ETag our own write-back produced (a pull skips that version: it is not a user's change).
-- Added in version 2.
CREATE TABLE dataverse_row (
    vaccination_id  TEXT PRIMARY KEY,
    etag            TEXT,
    modified_on     TEXT,
    written_etag    TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;

PRAGMA user_version = 4;
