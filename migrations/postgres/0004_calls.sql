-- Telephone calls: the voice menu keeps each call's step here, so that any instance answers
-- the next webhook. A webhook carries the number of the step it answers; the request that
-- moves `seq` from that number (compare-and-set) is the only one that acts, and `answered`
-- catches up when its answer, `last_twiml`, is written. Any other request — a replay, a
-- duplicate racing it — gets that answer and changes nothing.
CREATE TABLE calls (
    call_sid     TEXT        PRIMARY KEY,
    commune_id   BIGINT      NOT NULL REFERENCES communes (id),
    caller       TEXT        NOT NULL,
    seq          BIGINT      NOT NULL DEFAULT 0,
    answered     BIGINT      NOT NULL DEFAULT 0,
    state        TEXT        NOT NULL,
    last_twiml   TEXT        NOT NULL,
    outcome      TEXT        CHECK (outcome IN ('booked', 'cancelled', 'moved', 'transferred', 'abandoned', 'failed')),
    spoken_name  TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ
);
CREATE INDEX calls_commune_time ON calls (commune_id, started_at);

-- A commune's voice: which synthetic voice, language and call flow (`voice-flows/{flow}.toml`).
CREATE TABLE commune_voice (
    commune_id BIGINT PRIMARY KEY REFERENCES communes (id),
    voice      TEXT   NOT NULL,
    language   TEXT   NOT NULL,
    flow       TEXT   NOT NULL
);
