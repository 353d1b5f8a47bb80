-- guichet schema, SQLite flavour. Instants are INTEGER seconds since the Unix epoch (UTC);
-- dates are TEXT 'YYYY-MM-DD' in the commune's time zone; times of day are minutes after
-- midnight. STRICT tables refuse a value of the wrong type instead of converting it.

CREATE TABLE communes (
    id                          INTEGER PRIMARY KEY,
    slug                        TEXT    NOT NULL UNIQUE,
    name                        TEXT    NOT NULL,
    insee_code                  TEXT    NOT NULL,
    timezone                    TEXT    NOT NULL DEFAULT 'Europe/Paris',
    population                  INTEGER NOT NULL DEFAULT 0,
    switchboard_number          TEXT,
    switchboard_hours           TEXT    NOT NULL DEFAULT '[]',
    reminder_delay_hours        INTEGER NOT NULL DEFAULT 48 CHECK (reminder_delay_hours >= 0),
    quiet_start_minute          INTEGER NOT NULL DEFAULT 1200 CHECK (quiet_start_minute BETWEEN 0 AND 1440),
    quiet_end_minute            INTEGER NOT NULL DEFAULT 480 CHECK (quiet_end_minute BETWEEN 0 AND 1440),
    sms_sender                  TEXT    NOT NULL DEFAULT '',
    allow_multiple_per_category INTEGER NOT NULL DEFAULT 0,
    created_at                  INTEGER NOT NULL
) STRICT;

CREATE TABLE commune_phone_numbers (
    number     TEXT    PRIMARY KEY,
    commune_id INTEGER NOT NULL REFERENCES communes (id) ON DELETE CASCADE
) STRICT;

CREATE TABLE locations (
    id           INTEGER PRIMARY KEY,
    commune_id   INTEGER NOT NULL REFERENCES communes (id),
    name         TEXT    NOT NULL,
    address      TEXT    NOT NULL,
    postcode     TEXT    NOT NULL,
    city         TEXT    NOT NULL,
    access_notes TEXT    NOT NULL DEFAULT '',
    active       INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX locations_commune ON locations (commune_id);

CREATE TABLE services (
    id                 INTEGER PRIMARY KEY,
    commune_id         INTEGER NOT NULL REFERENCES communes (id),
    name               TEXT    NOT NULL,
    spoken_name        TEXT    NOT NULL,
    category           TEXT    NOT NULL CHECK (category IN ('titres', 'scolaire', 'elus', 'etat_civil', 'autre')),
    duration_minutes   INTEGER NOT NULL CHECK (duration_minutes > 0),
    max_persons        INTEGER NOT NULL DEFAULT 1 CHECK (max_persons >= 1),
    min_notice_minutes INTEGER NOT NULL DEFAULT 0 CHECK (min_notice_minutes >= 0),
    horizon_days       INTEGER NOT NULL DEFAULT 60 CHECK (horizon_days >= 0),
    channel_web        INTEGER NOT NULL DEFAULT 1,
    channel_phone      INTEGER NOT NULL DEFAULT 1,
    channel_agent      INTEGER NOT NULL DEFAULT 1,
    what_to_bring      TEXT    NOT NULL DEFAULT '',
    active             INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX services_commune ON services (commune_id);

CREATE TABLE plannings (
    id         INTEGER PRIMARY KEY,
    commune_id INTEGER NOT NULL REFERENCES communes (id),
    name       TEXT    NOT NULL,
    capacity   INTEGER NOT NULL DEFAULT 1 CHECK (capacity >= 1),
    active     INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX plannings_commune ON plannings (commune_id);

CREATE TABLE opening_rules (
    id           INTEGER PRIMARY KEY,
    planning_id  INTEGER NOT NULL REFERENCES plannings (id),
    location_id  INTEGER NOT NULL REFERENCES locations (id),
    weekdays     INTEGER NOT NULL CHECK (weekdays BETWEEN 1 AND 127),
    start_minute INTEGER NOT NULL CHECK (start_minute >= 0),
    end_minute   INTEGER NOT NULL CHECK (end_minute > start_minute AND end_minute <= 1440),
    step_minutes INTEGER NOT NULL CHECK (step_minutes > 0),
    valid_from   TEXT    NOT NULL,
    valid_until  TEXT,
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
) STRICT;
CREATE INDEX opening_rules_planning ON opening_rules (planning_id);

CREATE TABLE opening_rule_services (
    rule_id    INTEGER NOT NULL REFERENCES opening_rules (id) ON DELETE CASCADE,
    service_id INTEGER NOT NULL REFERENCES services (id),
    PRIMARY KEY (rule_id, service_id)
) STRICT;

CREATE TABLE closures (
    id          INTEGER PRIMARY KEY,
    commune_id  INTEGER NOT NULL REFERENCES communes (id),
    planning_id INTEGER REFERENCES plannings (id),
    location_id INTEGER REFERENCES locations (id),
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL CHECK (ends_at > starts_at),
    reason      TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX closures_commune_time ON closures (commune_id, ends_at);

CREATE TABLE appointments (
    id              BLOB    PRIMARY KEY,
    commune_id      INTEGER NOT NULL REFERENCES communes (id),
    planning_id     INTEGER NOT NULL REFERENCES plannings (id),
    location_id     INTEGER NOT NULL REFERENCES locations (id),
    service_id      INTEGER NOT NULL REFERENCES services (id),
    starts_at       INTEGER NOT NULL,
    ends_at         INTEGER NOT NULL CHECK (ends_at > starts_at),
    seat            INTEGER CHECK (seat >= 1),
    persons         INTEGER NOT NULL CHECK (persons >= 1),
    citizen_name    TEXT    NOT NULL,
    phone           TEXT,
    email           TEXT,
    ants_ids        TEXT    NOT NULL DEFAULT '',
    channel         TEXT    NOT NULL CHECK (channel IN ('web', 'phone', 'agent')),
    status          TEXT    NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled_by_citizen',
                                   'cancelled_by_commune', 'honoured', 'no_show', 'moved', 'expired')),
    hold_expires_at INTEGER,
    replaces_id     BLOB REFERENCES appointments (id),
    cancel_reason   TEXT,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    confirmed_at    INTEGER,
    cancelled_at    INTEGER,
    -- A seat is held exactly while the status takes one; a hold always has an expiry.
    CONSTRAINT appointments_seat_status CHECK (
        (status IN ('held', 'confirmed', 'honoured', 'no_show')) = (seat IS NOT NULL)),
    CONSTRAINT appointments_hold_expiry CHECK (status <> 'held' OR hold_expires_at IS NOT NULL)
) STRICT;
CREATE INDEX appointments_planning_time ON appointments (planning_id, starts_at);
CREATE INDEX appointments_commune_time ON appointments (commune_id, starts_at);
CREATE INDEX appointments_held ON appointments (planning_id, hold_expires_at) WHERE status = 'held';
-- Covers the free-slot search's occupancy query, so that it never reads the table itself.
CREATE INDEX appointments_occupancy ON appointments
    (commune_id, starts_at, ends_at, planning_id, seat, status, hold_expires_at) WHERE seat IS NOT NULL;

-- Invariant 1 in the database: one seat never carries two overlapping appointments, and no seat
-- exceeds the planning's capacity. (PostgreSQL has an exclusion constraint of the same name.)
CREATE TRIGGER appointments_no_overlap_insert BEFORE INSERT ON appointments
WHEN NEW.seat IS NOT NULL AND EXISTS (
    SELECT 1 FROM appointments a
    WHERE a.planning_id = NEW.planning_id AND a.seat = NEW.seat
      AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at)
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap');
END;

CREATE TRIGGER appointments_no_overlap_update BEFORE UPDATE OF seat, planning_id, starts_at, ends_at ON appointments
WHEN NEW.seat IS NOT NULL AND EXISTS (
    SELECT 1 FROM appointments a
    WHERE a.id <> NEW.id AND a.planning_id = NEW.planning_id AND a.seat = NEW.seat
      AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at)
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap');
END;

CREATE TRIGGER appointments_seat_capacity_insert BEFORE INSERT ON appointments
WHEN NEW.seat > (SELECT capacity FROM plannings WHERE id = NEW.planning_id)
BEGIN
    SELECT RAISE(ABORT, 'appointments_seat_capacity');
END;

CREATE TRIGGER appointments_seat_capacity_update BEFORE UPDATE OF seat, planning_id ON appointments
WHEN NEW.seat > (SELECT capacity FROM plannings WHERE id = NEW.planning_id)
BEGIN
    SELECT RAISE(ABORT, 'appointments_seat_capacity');
END;

-- Invariant 2: which active appointments each identity (mobile number, e-mail, ANTS id) holds
-- per category. All the claims on one identity must be in one commune, and only one at all when
-- that commune does not allow several (`exclusive`). A claim whose appointment is no longer
-- active is stale and is deleted by the next booking on that identity, in its transaction.
CREATE TABLE citizen_claims (
    category       TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('phone', 'email', 'ants')),
    key            TEXT    NOT NULL,
    appointment_id BLOB    NOT NULL REFERENCES appointments (id),
    commune_id     INTEGER NOT NULL REFERENCES communes (id),
    exclusive      INTEGER NOT NULL,
    PRIMARY KEY (category, kind, key, appointment_id)
) STRICT;
CREATE INDEX citizen_claims_appointment ON citizen_claims (appointment_id);

-- (PostgreSQL: an exclusion constraint and a partial unique index of the same meaning.)
CREATE TRIGGER citizen_claims_conflict BEFORE INSERT ON citizen_claims
WHEN EXISTS (
    SELECT 1 FROM citizen_claims c
    WHERE c.category = NEW.category AND c.kind = NEW.kind AND c.key = NEW.key
      AND c.appointment_id <> NEW.appointment_id
      AND (c.commune_id <> NEW.commune_id OR c.exclusive OR NEW.exclusive))
BEGIN
    SELECT RAISE(ABORT, 'citizen_claims_conflict');
END;
