-- Notifications (the outbox), one-time codes, personal links, idempotency keys, SMS replies.

ALTER TABLE communes ADD COLUMN sms_daily_budget INTEGER NOT NULL DEFAULT 300 CHECK (sms_daily_budget >= 0);
ALTER TABLE communes ADD COLUMN allow_foreign_mobiles INTEGER NOT NULL DEFAULT 0;

-- Every message guichet sends, written in the transaction of the change that causes it.
-- pending → sending (claimed, with a lease) → sent | failed | unknown; cancelled when the
-- appointment changed before it was due. `dedupe_key` makes (appointment, kind, version,
-- channel) unique.
CREATE TABLE notifications (
    id              BLOB    PRIMARY KEY,
    commune_id      INTEGER REFERENCES communes (id),
    appointment_id  BLOB    REFERENCES appointments (id),
    kind            TEXT    NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('sms', 'email')),
    destination     TEXT    NOT NULL,
    dedupe_key      TEXT    UNIQUE,
    subject         TEXT,
    body            TEXT    NOT NULL,
    html            TEXT,
    ics             TEXT,
    due_at          INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     INTEGER,
    claimed_by      TEXT,
    send_started_at INTEGER,
    provider_id     TEXT,
    delivery_status TEXT,
    segments        INTEGER,
    cost_micro_eur  INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER
) STRICT;
CREATE INDEX notifications_due ON notifications (due_at) WHERE status IN ('pending', 'sending');
CREATE INDEX notifications_appointment ON notifications (appointment_id);
CREATE INDEX notifications_provider ON notifications (provider_id);
CREATE INDEX notifications_destination ON notifications (destination, kind, created_at);
CREATE INDEX notifications_commune_sms ON notifications (commune_id, created_at) WHERE channel = 'sms';

-- The live one-time code of a held appointment; a new send replaces it. Only a keyed hash.
CREATE TABLE otp_codes (
    appointment_id BLOB    PRIMARY KEY REFERENCES appointments (id),
    destination    TEXT    NOT NULL,
    code_hash      TEXT    NOT NULL,
    expires_at     INTEGER NOT NULL,
    attempts_left  INTEGER NOT NULL,
    used_at        INTEGER,
    created_at     INTEGER NOT NULL
) STRICT;

-- Personal links: only the SHA-256 of the token is kept. A moved appointment takes them along.
CREATE TABLE manage_tokens (
    token_hash     TEXT    PRIMARY KEY,
    appointment_id BLOB    NOT NULL REFERENCES appointments (id),
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX manage_tokens_appointment ON manage_tokens (appointment_id);

-- Idempotency-Key of POST requests: the first answer is kept and replayed for 24 hours.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status_code  INTEGER,
    response     TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- Numbers that replied STOP: no more reminders.
CREATE TABLE sms_opt_outs (
    phone      TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

-- A question asked by SMS and waiting for its answer ("Répondez OUI pour annuler").
CREATE TABLE sms_conversations (
    phone          TEXT    PRIMARY KEY,
    appointment_id BLOB    NOT NULL REFERENCES appointments (id),
    action         TEXT    NOT NULL CHECK (action IN ('cancel')),
    expires_at     INTEGER NOT NULL
) STRICT;

-- Platform settings kept in the database so that every instance shares them (the key that
-- hashes one-time codes, when the configuration gives none).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One-time-code SMS sent per commune and local day: the daily budget, counted without scanning
-- the day's messages.
CREATE TABLE sms_daily_usage (
    commune_id INTEGER NOT NULL REFERENCES communes (id),
    day        TEXT    NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (commune_id, day)
) STRICT;
