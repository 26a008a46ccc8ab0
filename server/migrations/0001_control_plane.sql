-- Control plane schema. Portable between SQLite and PostgreSQL: text ids,
-- RFC 3339 timestamps as text, microsecond clocks as BIGINT, JSON documents
-- as text.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    replica_name TEXT NOT NULL,
    status TEXT NOT NULL,
    training_progress TEXT NOT NULL,
    error_message TEXT,
    source_kind TEXT NOT NULL,
    source TEXT NOT NULL,
    voice_name TEXT,
    callback_url TEXT,
    stock INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE personas (
    id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    replica_id TEXT,
    persona_id TEXT,
    callback_url TEXT,
    meeting_token_hash TEXT,
    created_at TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    ended_at TEXT,
    shutdown_reason TEXT,
    host TEXT NOT NULL
);
CREATE INDEX conversations_by_status ON conversations (status, created_us);

CREATE TABLE utterances (
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    interrupted INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE conversation_events (
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    url TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_us BIGINT NOT NULL,
    next_attempt_us BIGINT NOT NULL,
    last_error TEXT,
    delivered_us BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_us);
CREATE INDEX webhook_outbox_by_subject ON webhook_outbox (subject_id, seq);
