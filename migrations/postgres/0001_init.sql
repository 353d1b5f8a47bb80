-- guichet schema, PostgreSQL flavour: the same tables as migrations/sqlite, with native types.
-- btree_gist lets one exclusion constraint mix equality (planning, seat) and range overlap.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE communes (
    id                          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                        TEXT    NOT NULL UNIQUE,
    name                        TEXT    NOT NULL,
    insee_code                  TEXT    NOT NULL,
    timezone                    TEXT    NOT NULL DEFAULT 'Europe/Paris',
    population                  BIGINT  NOT NULL DEFAULT 0,
    switchboard_number          TEXT,
    switchboard_hours           TEXT    NOT NULL DEFAULT '[]',
    reminder_delay_hours        INTEGER NOT NULL DEFAULT 48 CHECK (reminder_delay_hours >= 0),
    quiet_start_minute          INTEGER NOT NULL DEFAULT 1200 CHECK (quiet_start_minute BETWEEN 0 AND 1440),
    quiet_end_minute            INTEGER NOT NULL DEFAULT 480 CHECK (quiet_end_minute BETWEEN 0 AND 1440),
    sms_sender                  TEXT    NOT NULL DEFAULT '',
    allow_multiple_per_category BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                  TIMESTAMPTZ NOT NULL
);

CREATE TABLE commune_phone_numbers (
    number     TEXT   CONSTRAINT commune_phone_numbers_number_key PRIMARY KEY,
    commune_id BIGINT NOT NULL REFERENCES communes (id) ON DELETE CASCADE
);

CREATE TABLE locations (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_id   BIGINT  NOT NULL REFERENCES communes (id),
    name         TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    postcode     TEXT    NOT NULL,
    city         TEXT    NOT NULL,
    access_notes TEXT    NOT NULL DEFAULT '',
    active       BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX locations_commune ON locations (commune_id);

CREATE TABLE services (
    id                 BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_id         BIGINT  NOT NULL REFERENCES communes (id),
    name               TEXT    NOT NULL,
    spoken_name        TEXT    NOT NULL,
    category           TEXT    NOT NULL CHECK (category IN ('titres', 'scolaire', 'elus', 'etat_civil', 'autre')),
    duration_minutes   INTEGER NOT NULL CHECK (duration_minutes > 0),
    max_persons        INTEGER NOT NULL DEFAULT 1 CHECK (max_persons >= 1),
    min_notice_minutes INTEGER NOT NULL DEFAULT 0 CHECK (min_notice_minutes >= 0),
    horizon_days       INTEGER NOT NULL DEFAULT 60 CHECK (horizon_days >= 0),
    channel_web        BOOLEAN NOT NULL DEFAULT TRUE,
    channel_phone      BOOLEAN NOT NULL DEFAULT TRUE,
    channel_agent      BOOLEAN NOT NULL DEFAULT TRUE,
    what_to_bring      TEXT    NOT NULL DEFAULT '',
    active             BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX services_commune ON services (commune_id);

CREATE TABLE plannings (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_id BIGINT  NOT NULL REFERENCES communes (id),
    name       TEXT    NOT NULL,
    capacity   INTEGER NOT NULL DEFAULT 1 CHECK (capacity >= 1),
    active     BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX plannings_commune ON plannings (commune_id);

CREATE TABLE opening_rules (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    planning_id  BIGINT  NOT NULL REFERENCES plannings (id),
    location_id  BIGINT  NOT NULL REFERENCES locations (id),
    weekdays     INTEGER NOT NULL CHECK (weekdays BETWEEN 1 AND 127),
    start_minute INTEGER NOT NULL CHECK (start_minute >= 0),
    end_minute   INTEGER NOT NULL CHECK (end_minute > start_minute AND end_minute <= 1440),
    step_minutes INTEGER NOT NULL CHECK (step_minutes > 0),
    valid_from   DATE    NOT NULL,
    valid_until  DATE,
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
);
CREATE INDEX opening_rules_planning ON opening_rules (planning_id);

CREATE TABLE opening_rule_services (
    rule_id    BIGINT NOT NULL REFERENCES opening_rules (id) ON DELETE CASCADE,
    service_id BIGINT NOT NULL REFERENCES services (id),
    PRIMARY KEY (rule_id, service_id)
);

CREATE TABLE closures (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_id  BIGINT      NOT NULL REFERENCES communes (id),
    planning_id BIGINT      REFERENCES plannings (id),
    location_id BIGINT      REFERENCES locations (id),
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL CHECK (ends_at > starts_at),
    reason      TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX closures_commune_time ON closures (commune_id, ends_at);

CREATE TABLE appointments (
    id              UUID        PRIMARY KEY,
    commune_id      BIGINT      NOT NULL REFERENCES communes (id),
    planning_id     BIGINT      NOT NULL REFERENCES plannings (id),
    location_id     BIGINT      NOT NULL REFERENCES locations (id),
    service_id      BIGINT      NOT NULL REFERENCES services (id),
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL CHECK (ends_at > starts_at),
    seat            INTEGER     CHECK (seat >= 1),
    persons         INTEGER     NOT NULL CHECK (persons >= 1),
    citizen_name    TEXT        NOT NULL,
    phone           TEXT,
    email           TEXT,
    ants_ids        TEXT        NOT NULL DEFAULT '',
    channel         TEXT        NOT NULL CHECK (channel IN ('web', 'phone', 'agent')),
    status          TEXT        NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled_by_citizen',
                                         'cancelled_by_commune', 'honoured', 'no_show', 'moved', 'expired')),
    hold_expires_at TIMESTAMPTZ,
    replaces_id     UUID        REFERENCES appointments (id),
    cancel_reason   TEXT,
    version         INTEGER     NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    confirmed_at    TIMESTAMPTZ,
    cancelled_at    TIMESTAMPTZ,
    CONSTRAINT appointments_seat_status CHECK (
        (status IN ('held', 'confirmed', 'honoured', 'no_show')) = (seat IS NOT NULL)),
    CONSTRAINT appointments_hold_expiry CHECK (status <> 'held' OR hold_expires_at IS NOT NULL),
    -- Invariant 1 in the database: one seat never carries two overlapping appointments. Rows
    -- without a seat (cancelled, moved, expired) never conflict, as NULL is equal to nothing.
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        planning_id WITH =, seat WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&)
);
CREATE INDEX appointments_planning_time ON appointments (planning_id, starts_at);
CREATE INDEX appointments_commune_time ON appointments (commune_id, starts_at);
CREATE INDEX appointments_held ON appointments (planning_id, hold_expires_at) WHERE status = 'held';
-- Covers the free-slot search's occupancy query, so that it never reads the table itself.
CREATE INDEX appointments_occupancy ON appointments
    (commune_id, starts_at, ends_at, planning_id, seat, status, hold_expires_at) WHERE seat IS NOT NULL;

-- ... and no seat beyond the planning's capacity.
CREATE FUNCTION appointments_seat_within_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seat IS NOT NULL AND NEW.seat > (SELECT capacity FROM plannings WHERE id = NEW.planning_id) THEN
        RAISE EXCEPTION 'seat % exceeds the capacity of planning %', NEW.seat, NEW.planning_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'appointments_seat_capacity';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER appointments_seat_capacity BEFORE INSERT OR UPDATE OF seat, planning_id ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointments_seat_within_capacity();

-- Invariant 2 (see migrations/sqlite): all claims on one identity in one commune, and only one
-- when that commune does not allow several.
CREATE TABLE citizen_claims (
    category       TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('phone', 'email', 'ants')),
    key            TEXT    NOT NULL,
    appointment_id UUID    NOT NULL REFERENCES appointments (id),
    commune_id     BIGINT  NOT NULL REFERENCES communes (id),
    exclusive      BOOLEAN NOT NULL,
    PRIMARY KEY (category, kind, key, appointment_id),
    CONSTRAINT citizen_claims_one_commune EXCLUDE USING gist (
        category WITH =, kind WITH =, key WITH =, commune_id WITH <>)
);
CREATE UNIQUE INDEX citizen_claims_exclusive ON citizen_claims (category, kind, key) WHERE exclusive;
CREATE INDEX citizen_claims_appointment ON citizen_claims (appointment_id);
