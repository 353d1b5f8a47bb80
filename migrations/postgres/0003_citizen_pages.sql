-- "Find my appointment" looks appointments up by the mobile number or e-mail they were booked
-- with; the SMS replies look up by number too.
CREATE INDEX appointments_phone ON appointments (phone) WHERE phone IS NOT NULL;
CREATE INDEX appointments_email ON appointments (lower(email)) WHERE email IS NOT NULL;
