-- Verified visitors: the site's secret for visitor tokens (hex text, which is also the HMAC key
-- the site's backend uses), whether unverified visitors are refused, and their own limits.
ALTER TABLE sites ADD COLUMN visitor_secret TEXT;
ALTER TABLE sites ADD COLUMN require_verified_visitor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sites ADD COLUMN verified_rpm INTEGER;
ALTER TABLE sites ADD COLUMN verified_rpd INTEGER;
