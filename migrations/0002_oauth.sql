-- OAuth applications. The client secret is stored only as its SHA-256.
CREATE TABLE apps (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id     TEXT    NOT NULL UNIQUE,
    secret_hash   BLOB    NOT NULL,
    name          TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    redirect_uri  TEXT    NOT NULL DEFAULT '',
    -- Comma-separated user ids the app is restricted to; NULL means every user.
    allowed_users TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL
);

-- Which users have installed (approved) which app.
CREATE TABLE app_installs (
    app_id       INTEGER NOT NULL REFERENCES apps(id),
    user_id      INTEGER NOT NULL REFERENCES users(id),
    installed_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, user_id)
);

-- Token pairs. Both tokens are stored as SHA-256 digests; a refresh revokes the pair it used.
CREATE TABLE oauth_tokens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id          INTEGER NOT NULL REFERENCES apps(id),
    user_id         INTEGER NOT NULL REFERENCES users(id),
    access_hash     BLOB    NOT NULL UNIQUE,
    refresh_hash    BLOB    NOT NULL UNIQUE,
    access_expires  INTEGER NOT NULL,
    refresh_expires INTEGER NOT NULL,
    revoked         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

-- Authorization codes: single use, 30 s.
CREATE TABLE oauth_codes (
    code_hash  BLOB    PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps(id),
    user_id    INTEGER NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL
);

-- Browser sessions of the login and consent pages.
CREATE TABLE sessions (
    id_hash    BLOB    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    csrf       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Passwords for the login page (argon2 PHC strings); NULL means the user cannot sign in.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- Server-wide values such as the portal's member_id.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
