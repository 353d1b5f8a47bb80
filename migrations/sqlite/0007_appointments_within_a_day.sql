-- An appointment lasts at most a day: its slot lies within a day's opening hours. Reads of the
-- appointments over a span look back that far before it and no further
-- (`store::LONGEST_APPOINTMENT`): without that lower bound their index scans ran through the
-- whole history of a planning or a commune. (PostgreSQL has a check of the same name.)
CREATE TRIGGER appointments_within_a_day_insert BEFORE INSERT ON appointments
WHEN NEW.ends_at - NEW.starts_at > 86400
BEGIN
    SELECT RAISE(ABORT, 'appointments_within_a_day');
END;

CREATE TRIGGER appointments_within_a_day_update BEFORE UPDATE OF starts_at, ends_at ON appointments
WHEN NEW.ends_at - NEW.starts_at > 86400
BEGIN
    SELECT RAISE(ABORT, 'appointments_within_a_day');
END;

-- The overlap triggers of 0001 look back a day only, for the same reason: an appointment that
-- overlaps the new one started less than a day before it.
DROP TRIGGER appointments_no_overlap_insert;
CREATE TRIGGER appointments_no_overlap_insert BEFORE INSERT ON appointments
WHEN NEW.seat IS NOT NULL AND EXISTS (
    SELECT 1 FROM appointments a
    WHERE a.planning_id = NEW.planning_id AND a.seat = NEW.seat
      AND a.starts_at > NEW.starts_at - 86400
      AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at)
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap');
END;

DROP TRIGGER appointments_no_overlap_update;
CREATE TRIGGER appointments_no_overlap_update BEFORE UPDATE OF seat, planning_id, starts_at, ends_at ON appointments
WHEN NEW.seat IS NOT NULL AND EXISTS (
    SELECT 1 FROM appointments a
    WHERE a.id <> NEW.id AND a.planning_id = NEW.planning_id AND a.seat = NEW.seat
      AND a.starts_at > NEW.starts_at - 86400
      AND a.starts_at < NEW.ends_at AND NEW.starts_at < a.ends_at)
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap');
END;
