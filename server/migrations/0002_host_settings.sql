-- Settings shared by every host of one database (the webhook signing secret).
CREATE TABLE host_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
