-- Token scopes: `ingest`, `read`, `admin`, comma-separated and sorted (`ingest,read`). NULL on
-- the rows of tokens issued before scopes existed: they keep what every token could do then
-- (ingest and read), until replaced by scoped tokens and revoked.
ALTER TABLE tokens ADD COLUMN scopes text;
