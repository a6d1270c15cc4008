-- capture-collector schema v1: every row carries its organisation, and row-level security on
-- the session setting `app.org` keeps one organisation's queries from reading another's.
-- Payloads (exchanges, models) are sealed by the collector with the organisation's key before
-- they get here; only what watch, export and diff select on is kept in the clear.

-- The key check: a known text sealed under the collector's key, to tell a wrong key apart
-- from corrupt data before anything is read or written. Holds no organisation's data.
CREATE TABLE capture_meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- One row per organisation: the next position of its exchange log. Pushes take this row's
-- lock, so positions commit in order and a cursor (`pos > $last`) never skips a row that
-- commits late.
CREATE TABLE orgs (
    org      text PRIMARY KEY,
    next_pos bigint NOT NULL DEFAULT 0
);

-- One row per stored batch: the unique key is the deduplication (daemon id, instance id,
-- sequence), shared by every replica.
CREATE TABLE batches (
    org         text NOT NULL,
    daemon_id   text NOT NULL,
    instance_id text NOT NULL,
    sequence    bigint NOT NULL,
    pos         bigint NOT NULL,
    exchanges   integer NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, daemon_id, instance_id, sequence)
);
CREATE INDEX batches_stored_at ON batches (org, stored_at);

-- One row per exchange; `payload` is the sealed protobuf `Exchange`.
CREATE TABLE exchanges (
    org         text NOT NULL,
    pos         bigint NOT NULL,
    idx         integer NOT NULL,
    daemon_id   text NOT NULL,
    started_at  timestamptz,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    namespace   text,
    workload    text,
    routing_key text,
    endpoint    text,
    payload     bytea NOT NULL,
    PRIMARY KEY (org, pos, idx)
);
CREATE INDEX exchanges_started ON exchanges (org, started_at);
CREATE INDEX exchanges_stored ON exchanges (org, stored_at);
CREATE INDEX exchanges_routing_key ON exchanges (org, routing_key, started_at);
CREATE INDEX exchanges_workload ON exchanges (org, workload, started_at);
CREATE INDEX exchanges_endpoint ON exchanges (org, endpoint);

-- Tokens: a salted HMAC-SHA256 of each, never the token.
CREATE TABLE tokens (
    id      bigserial PRIMARY KEY,
    org     text NOT NULL,
    masked  text NOT NULL,
    -- Unpadded base64url, as in the file store's tokens.json.
    salt    text NOT NULL,
    hmac    text NOT NULL,
    -- RFC 3339.
    created text NOT NULL,
    revoked text
);
CREATE INDEX tokens_org_masked ON tokens (org, masked);

-- Which organisation a masked token belongs to: what authentication looks up before it knows
-- the organisation. Nothing secret (the masked form shows 8 of 43 random characters).
CREATE TABLE token_index (
    masked text NOT NULL,
    org    text NOT NULL,
    PRIMARY KEY (masked, org)
);

-- Per-organisation blobs (the Smart Diff noise models), sealed.
CREATE TABLE models (
    org        text NOT NULL,
    name       text NOT NULL,
    payload    bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, name)
);

ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON orgs
    USING (org = current_setting('app.org', true))
    WITH CHECK (org = current_setting('app.org', true));

ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE batches FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON batches
    USING (org = current_setting('app.org', true))
    WITH CHECK (org = current_setting('app.org', true));

ALTER TABLE exchanges ENABLE ROW LEVEL SECURITY;
ALTER TABLE exchanges FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON exchanges
    USING (org = current_setting('app.org', true))
    WITH CHECK (org = current_setting('app.org', true));

ALTER TABLE tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON tokens
    USING (org = current_setting('app.org', true))
    WITH CHECK (org = current_setting('app.org', true));

ALTER TABLE models ENABLE ROW LEVEL SECURITY;
ALTER TABLE models FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON models
    USING (org = current_setting('app.org', true))
    WITH CHECK (org = current_setting('app.org', true));
