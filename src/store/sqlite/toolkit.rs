//! The SQL of the test-server toolkit (issue 16): reset, and the create-or-update writes of
//! fixtures. Each runs on the writer thread, as one savepoint of a group commit, so it is
//! atomic with respect to every REST write in flight.

use rusqlite::{params, Connection, OptionalExtension};

use super::{backend, insert_user, insert_webhook};
use crate::limits::RateOverride;
use crate::store::{NewApp, StoreResult, User};

/// Empties the state a test produces: notifications, their chats, the event log and the
/// e-mail outbox. `AUTOINCREMENT` keeps its counters in `sqlite_sequence`,
/// which is left alone, so notification, chat, webhook and app ids never go backwards.
pub(super) fn reset(c: &Connection, keep_directory: bool) -> StoreResult<()> {
    // The chats go with their notifications: the counters are the triggers' business, and a
    // chat id is handed out again only through AUTOINCREMENT, so never reused.
    let mut sql = String::from(
        "DELETE FROM notifications; DELETE FROM notify_chats; DELETE FROM events;
         DELETE FROM outbox;",
    );
    if !keep_directory {
        sql.push_str(
            "DELETE FROM oauth_tokens; DELETE FROM oauth_codes; DELETE FROM sessions;
             DELETE FROM app_installs; DELETE FROM apps; DELETE FROM webhooks; DELETE FROM users;",
        );
    }
    c.execute_batch(&sql).map_err(backend)
}

pub(super) fn put_setting(c: &Connection, key: &str, value: &str) -> StoreResult<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map(|_| ())
    .map_err(backend)
}

/// Creates the user, or sets its fields; `true` when a row was created or changed.
pub(super) fn upsert_user(c: &Connection, u: &User) -> StoreResult<bool> {
    let current: Option<(String, String, String, bool, bool)> = c
        .query_row(
            "SELECT name, last_name, email, active, is_admin FROM users WHERE id = ?1",
            [u.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(backend)?;
    match current {
        None => insert_user(c, u).map(|_| true),
        Some(row)
            if row
                == (
                    u.name.clone(),
                    u.last_name.clone(),
                    u.email.clone(),
                    u.active,
                    u.is_admin,
                ) =>
        {
            Ok(false)
        }
        Some(_) => c
            .execute(
                "UPDATE users SET name = ?2, last_name = ?3, email = ?4, active = ?5, is_admin = ?6
                  WHERE id = ?1",
                params![u.id, u.name, u.last_name, u.email, u.active, u.is_admin],
            )
            .map(|_| true)
            .map_err(backend),
    }
}

/// The webhook of `user_id` with this code: created, or its scopes and rate set (and made
/// active). Returns its id and whether anything changed.
pub(super) fn ensure_webhook(
    c: &Connection,
    user_id: i64,
    code_hash: &[u8; 32],
    scopes: &str,
    rate: &RateOverride,
) -> StoreResult<(i64, bool)> {
    let found: Option<i64> = c
        .query_row(
            "SELECT id FROM webhooks WHERE user_id = ?1 AND code_hash = ?2",
            params![user_id, &code_hash[..]],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    match found {
        None => insert_webhook(c, user_id, code_hash, scopes, rate).map(|id| (id, true)),
        Some(id) => {
            let n = c
                .execute(
                    "UPDATE webhooks SET scopes = ?2, rate_per_second = ?3, rate_burst = ?4, active = 1
                      WHERE id = ?1 AND NOT (scopes = ?2 AND rate_per_second IS ?3
                                             AND rate_burst IS ?4 AND active = 1)",
                    params![id, scopes, rate.per_second, rate.burst],
                )
                .map_err(backend)?;
            Ok((id, n > 0))
        }
    }
}

/// The app with this client id: created, or its secret, name, scopes and redirect URI set (and
/// made active). Returns its id and whether anything changed.
pub(super) fn upsert_app(c: &Connection, app: &NewApp) -> StoreResult<(i64, bool)> {
    let allowed = app
        .allowed_users
        .as_ref()
        .map(|u| u.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
    let scopes = app.scopes.join(",");
    let found: Option<i64> = c
        .query_row(
            "SELECT id FROM apps WHERE client_id = ?1",
            [&app.client_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let Some(id) = found else {
        c.execute(
            "INSERT INTO apps (client_id, secret_hash, name, scopes, redirect_uri, allowed_users,
                               rate_per_second, rate_burst, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, strftime('%s','now'))",
            params![
                app.client_id,
                &app.secret_hash[..],
                app.name,
                scopes,
                app.redirect_uri,
                allowed,
                app.rate.per_second,
                app.rate.burst
            ],
        )
        .map_err(backend)?;
        return Ok((c.last_insert_rowid(), true));
    };
    let n = c
        .execute(
            "UPDATE apps SET secret_hash = ?2, name = ?3, scopes = ?4, redirect_uri = ?5,
                             allowed_users = ?6, rate_per_second = ?7, rate_burst = ?8, active = 1
              WHERE id = ?1 AND NOT (secret_hash = ?2 AND name = ?3 AND scopes = ?4
                                     AND redirect_uri = ?5 AND allowed_users IS ?6
                                     AND rate_per_second IS ?7 AND rate_burst IS ?8 AND active = 1)",
            params![
                id,
                &app.secret_hash[..],
                app.name,
                scopes,
                app.redirect_uri,
                allowed,
                app.rate.per_second,
                app.rate.burst
            ],
        )
        .map_err(backend)?;
    Ok((id, n > 0))
}
