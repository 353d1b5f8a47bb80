-- Idempotent answers are now kept sealed under a key only the client's Idempotency-Key opens,
-- and the key itself only as a keyed hash (src/domain/idempotency.rs). Answers kept in clear
-- before — a confirmation's carries the citizen's personal token — go now rather than in 24
-- hours; a retry with such a key runs again, where the duplicate and single-use-code rules
-- refuse a second booking or confirmation.
DELETE FROM idempotency_keys WHERE response IS NOT NULL AND response NOT LIKE 'v1.%';
