-- An appointment lasts at most a day: its slot lies within a day's opening hours. Reads of the
-- appointments over a span look back that far before it and no further
-- (`store::LONGEST_APPOINTMENT`): without that lower bound their index scans ran through the
-- whole history of a planning or a commune — with three years of a busy passport station
-- (79,000 appointments), 9 ms for the seat read of every hold, and 10 ms for every occupancy read.
ALTER TABLE appointments ADD CONSTRAINT appointments_within_a_day
    CHECK (ends_at - starts_at <= interval '1 day');
