-- Audit records. Idempotent: run on every open.

-- The evidence chain: every audit event, in order, as the exact line its
-- hash covers (see portcullis_core::evidence). The other columns repeat
-- what the line says, for lookups; `audit verify` checks they agree.
CREATE TABLE IF NOT EXISTS evidence (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    session_id TEXT,
    user       TEXT,                        -- session_started only
    connection TEXT,                        -- session_started only
    line       TEXT NOT NULL,
    hash       TEXT NOT NULL                -- SHA-256 of line, hex
);
CREATE INDEX IF NOT EXISTS evidence_session ON evidence (session_id, kind) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS evidence_starts ON evidence (session_id) WHERE kind = 'session_started';

-- Signed checkpoints over the chain's head.
CREATE TABLE IF NOT EXISTS checkpoints (
    number    INTEGER PRIMARY KEY,
    upto      INTEGER NOT NULL,
    at_unix   INTEGER NOT NULL,
    line      TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- Before the evidence chain (layout version 3), sessions and commands
-- were kept in these two tables; opening such a store moves their rows
-- into the chain and empties them.
CREATE TABLE IF NOT EXISTS sessions (
    id               TEXT PRIMARY KEY,      -- UUIDv7: sorts by start time
    protocol         TEXT NOT NULL,
    connection       TEXT NOT NULL,
    user             TEXT NOT NULL,
    groups           TEXT NOT NULL,         -- JSON array
    actor            TEXT,
    auth_method      TEXT NOT NULL,
    client_user      TEXT,
    client_address   TEXT NOT NULL,
    application_name TEXT,
    client_tls       INTEGER NOT NULL,
    connect_policies TEXT NOT NULL,         -- JSON array
    started_at       TEXT NOT NULL,         -- RFC 3339
    ended_at         TEXT,
    end_reason       TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user, id);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (ended_at) WHERE ended_at IS NULL;

-- Commands of every protocol (named when SQL was the only one).
CREATE TABLE IF NOT EXISTS statements (
    session_id    TEXT NOT NULL REFERENCES sessions (id),
    seq           INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    text          TEXT NOT NULL,
    params        TEXT,                     -- before version 2; now in detail
    prepared_name TEXT,                     -- before version 2; now in detail
    started_at    TEXT NOT NULL,
    duration_us   INTEGER NOT NULL,
    rows          INTEGER,                  -- before version 2; now in detail
    error         TEXT,
    allowed       INTEGER NOT NULL,
    policies      TEXT NOT NULL,            -- JSON array
    masked        TEXT,                     -- JSON {by_class, by_column}, when values were masked
    detail        TEXT,                     -- JSON object: the protocol's own facts (SQL: params, prepared_name, rows)
    PRIMARY KEY (session_id, seq)
);

-- Revocations in force: credentials of `user` issued at or before
-- `revoked_at` (seconds since the epoch) are refused.
CREATE TABLE IF NOT EXISTS revocations (
    user       TEXT PRIMARY KEY,
    revoked_at INTEGER NOT NULL,
    revoked_by TEXT NOT NULL
);

-- Reviews of held commands, open and ended (ended ones are history and
-- are never deleted). `body` is the whole review as JSON.
CREATE TABLE IF NOT EXISTS reviews (
    id         INTEGER PRIMARY KEY,
    status     TEXT NOT NULL,
    requester  TEXT NOT NULL,
    connection TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_open ON reviews (status) WHERE status IN ('pending', 'approved');
