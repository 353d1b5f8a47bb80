-- The agents' back-office: accounts, sessions kept in the database (any instance serves them),
-- sign-in failures (throttling that holds across instances), and the audit log.
CREATE TABLE agents (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL CONSTRAINT agents_email_key UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('agent', 'commune_admin', 'platform_admin')),
    commune_id    INTEGER REFERENCES communes (id),
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    -- A platform administrator belongs to no commune; everyone else to exactly one.
    CONSTRAINT agents_commune CHECK ((role = 'platform_admin') = (commune_id IS NULL))
) STRICT;
CREATE INDEX agents_commune ON agents (commune_id);

-- Only the SHA-256 of a session token is kept: a copy of the database opens no session.
CREATE TABLE agent_sessions (
    token_hash TEXT    PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);

CREATE TABLE signin_failures (
    key TEXT    NOT NULL,
    at  INTEGER NOT NULL
) STRICT;
CREATE INDEX signin_failures_key ON signin_failures (key, at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    commune_id  INTEGER REFERENCES communes (id),
    agent_id    INTEGER REFERENCES agents (id),
    agent_email TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_log_commune ON audit_log (commune_id, at);

-- A replacement offered by SMS can be accepted by replying OUI: a second kind of question.
CREATE TABLE sms_conversations_new (
    phone          TEXT    PRIMARY KEY,
    appointment_id BLOB    NOT NULL REFERENCES appointments (id),
    action         TEXT    NOT NULL CHECK (action IN ('cancel', 'accept')),
    expires_at     INTEGER NOT NULL
) STRICT;
INSERT INTO sms_conversations_new SELECT phone, appointment_id, action, expires_at FROM sms_conversations;
DROP TABLE sms_conversations;
ALTER TABLE sms_conversations_new RENAME TO sms_conversations;

-- The day view and the search read a commune's appointments by name.
CREATE INDEX appointments_commune_name ON appointments (commune_id, citizen_name);
