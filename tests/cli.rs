//! The command line: admin commands, their JSON output, and --help.

mod common;

use common::{Server, BIN};
use std::process::Command;

#[test]
fn user_and_webhook_add_print_json_and_work_beside_a_running_server() {
    let s = Server::start();
    let out = s.cli(&[
        "user",
        "add",
        "--id",
        "7",
        "--name",
        "Ann",
        "--last-name",
        "Lee",
        "--email",
        "ann@example.com",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["id"], 7);
    assert_eq!(u["email"], "ann@example.com");
    assert_eq!(u["active"], true);

    let out = s.cli(&[
        "webhook",
        "add",
        "--user-id",
        "7",
        "--scope",
        "im",
        "--json",
    ]);
    assert!(out.status.success());
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = w["code"].as_str().unwrap();
    assert_eq!(w["user_id"], 7);
    assert_eq!(code.len(), 16);
    let url = w["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/rest/7/{code}/")), "{url}");

    // The running server accepts the new webhook at once.
    let r = s.post_json(
        &format!("/rest/7/{code}/im.notify.system.add"),
        &serde_json::json!({"USER_ID": 7, "MESSAGE": "hi Ann"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Without --json, the URL alone.
    let out = s.cli(&["webhook", "add", "--user-id", "7", "--scope", "im,user"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.trim().starts_with("http://") && text.trim().ends_with('/'),
        "{text}"
    );
}

#[test]
fn admin_errors_are_reported() {
    let s = Server::start();
    let dup = s.cli(&["user", "add", "--id", "1", "--name", "Again"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let orphan = s.cli(&["webhook", "add", "--user-id", "99", "--scope", "im"]);
    assert!(!orphan.status.success());
    assert!(String::from_utf8_lossy(&orphan.stderr).contains("does not exist"));
}

#[test]
fn data_dir_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["user", "add", "--id", "3", "--name", "Env", "--json"])
        .env("IMNOTIFY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("imnotify.sqlite3").exists());
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "--data-dir",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--require-https",
        "IMNOTIFY_DATA_DIR",
        "limits.attach_max_bytes",
        "trusted_proxies",
    ] {
        assert!(help.contains(needle), "serve --help lacks {needle}");
    }
}

#[test]
fn config_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("imnotify.toml");
    let data = dir.path().join("from-file");
    std::fs::write(
        &cfg,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["user", "add", "--id", "4", "--name", "Cfg", "--config"])
        .arg(&cfg)
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("imnotify.sqlite3").exists());
    let missing = Command::new(BIN)
        .args([
            "user",
            "add",
            "--id",
            "4",
            "--name",
            "x",
            "--config",
            "/nonexistent/x.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn example_config_file_parses_to_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    // The example's data_dir is relative, so run from a scratch directory.
    let out = Command::new(BIN)
        .args([
            "user", "add", "--id", "2", "--name", "Ex", "--config", example,
        ])
        .current_dir(dir.path())
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/imnotify.sqlite3").exists());
}

#[test]
fn user_update_turns_email_notifications_off_and_on() {
    let s = Server::start();
    let email_on = || -> i64 {
        s.db()
            .query_row(
                "SELECT email_notifications FROM users WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(email_on(), 1, "on by default (D13)");
    let out = s.cli(&[
        "user",
        "update",
        "--id",
        "1",
        "--email-notifications",
        "off",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(email_on(), 0);
    let out = s.cli(&["user", "update", "--id", "1", "--email-notifications", "on"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(email_on(), 1);
    let out = s.cli(&[
        "user",
        "update",
        "--id",
        "999",
        "--email-notifications",
        "off",
    ]);
    assert!(!out.status.success(), "an unknown user is an error");
}
