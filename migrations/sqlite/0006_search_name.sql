-- Names as searches compare them: lower case, without accents or hyphens (see
-- `domain::wording::folded`). SQLite's lower() folds ASCII only, so the application writes this
-- column; rows from before it are folded here as well as SQL can.
ALTER TABLE appointments ADD COLUMN search_name TEXT NOT NULL DEFAULT '';
UPDATE appointments SET search_name = lower(
    replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(
    replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(
    replace(replace(replace(replace(replace(replace(citizen_name,
    'É', 'e'), 'È', 'e'), 'Ê', 'e'), 'é', 'e'), 'è', 'e'), 'ê', 'e'), 'ë', 'e'),
    'À', 'a'), 'à', 'a'), 'â', 'a'), 'ä', 'a'), 'Î', 'i'), 'î', 'i'), 'ï', 'i'),
    'Ô', 'o'), 'ô', 'o'), 'ö', 'o'), 'ù', 'u'), 'û', 'u'), 'ü', 'u'), 'Ç', 'c'), 'ç', 'c'),
    'Œ', 'oe'), 'œ', 'oe'), '-', ' '), '''', ' '));
-- A search for a part of a name (LIKE '%…%') reads the commune's rows whatever the index: the
-- index on names added with the back-office only slowed every booking down.
DROP INDEX appointments_commune_name;
