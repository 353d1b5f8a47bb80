-- The agents' back-office: accounts, sessions kept in the database (any instance serves them),
-- sign-in failures (throttling that holds across instances), and the audit log.
CREATE TABLE agents (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT    NOT NULL CONSTRAINT agents_email_key UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('agent', 'commune_admin', 'platform_admin')),
    commune_id    BIGINT  REFERENCES communes (id),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL,
    -- A platform administrator belongs to no commune; everyone else to exactly one.
    CONSTRAINT agents_commune CHECK ((role = 'platform_admin') = (commune_id IS NULL))
);
CREATE INDEX agents_commune ON agents (commune_id);

-- Only the SHA-256 of a session token is kept: a copy of the database opens no session.
CREATE TABLE agent_sessions (
    token_hash TEXT    PRIMARY KEY,
    agent_id   BIGINT  NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);

CREATE TABLE signin_failures (
    key TEXT        NOT NULL,
    at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX signin_failures_key ON signin_failures (key, at);

CREATE TABLE audit_log (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_id  BIGINT  REFERENCES communes (id),
    agent_id    BIGINT  REFERENCES agents (id),
    agent_email TEXT    NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    action      TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_commune ON audit_log (commune_id, at);

-- A replacement offered by SMS can be accepted by replying OUI: a second kind of question.
ALTER TABLE sms_conversations DROP CONSTRAINT sms_conversations_action_check;
ALTER TABLE sms_conversations ADD CONSTRAINT sms_conversations_action_check
    CHECK (action IN ('cancel', 'accept'));

-- The day view and the search read a commune's appointments by name.
CREATE INDEX appointments_commune_name ON appointments (commune_id, citizen_name);
