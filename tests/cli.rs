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
    let err = String::from_utf8_lossy(&orphan.stderr);
    assert!(err.contains("user 99 does not exist"), "{err}");
    // A missing user is not a conflict.
    assert!(!err.contains("conflict"), "{err}");
    // An app restricted to a user who does not exist is refused, and not created.
    let typo = s.cli(&[
        "app",
        "add",
        "--name",
        "Typo",
        "--scope",
        "im",
        "--allowed-users",
        "1,98",
    ]);
    assert!(!typo.status.success());
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(
        err.contains("--allowed-users: user 98 does not exist"),
        "{err}"
    );
    let apps = String::from_utf8(s.cli(&["app", "list"]).stdout).unwrap();
    assert!(!apps.contains("Typo"), "{apps}");
}

/// `webhook add` refuses a scope the server does not serve, as `app add` and the fixtures do:
/// a typo such as `usr` would otherwise make a webhook whose `user.get` calls fail with
/// `insufficient_scope` much later. Nothing is created.
#[test]
fn webhook_add_refuses_an_unknown_scope() {
    let s = Server::start();
    for scope in ["im,usr", "crm", "im,user_brief"] {
        let out = s.cli(&["webhook", "add", "--user-id", "1", "--scope", scope]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{scope}: {err}");
        assert!(
            err.contains("--scope: unknown scope") && err.contains("im, pull, pull_channel, user"),
            "{scope}: {err}"
        );
    }
    let list = s.cli(&["webhook", "list", "--json"]);
    let hooks: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    // Only the first start's webhook.
    assert_eq!(hooks.as_array().unwrap().len(), 1, "{hooks}");
    // Known scopes in any case still work.
    let out = s.cli(&["webhook", "add", "--user-id", "1", "--scope", "IM,User"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn data_dir_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["user", "add", "--id", "3", "--name", "Env", "--json"])
        .env("IMNOTIFY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    // The directory has no database: the command names it and creates nothing there.
    refused_for_no_database(&out, &dir.path().display().to_string());
    assert!(!dir.path().join("imnotify.sqlite3").exists());
}

/// An admin command's refusal of a data directory without a database: it names `dir` and says
/// how to make one.
fn refused_for_no_database(out: &std::process::Output, dir: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("no imnotify database in {dir}:"))
            && err.contains(&format!("imnotify serve --data-dir {dir}")),
        "{err}"
    );
}

#[test]
fn admin_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("typo");
    for args in [
        &["webhook", "list"][..],
        &["user", "add", "--id", "2", "--name", "X"],
        &["app", "list"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&wrong)
            .env_remove("IMNOTIFY_DATA_DIR")
            .env_remove("IMNOTIFY_DATABASE_URL")
            .output()
            .unwrap();
        refused_for_no_database(&out, &wrong.display().to_string());
        assert!(!wrong.exists(), "{args:?} created {}", wrong.display());
    }
    // Once a server has made the database, the same command works.
    let s = Server::start();
    let out = s.cli(&["webhook", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An admin command run by a user who may not enter the data directory (made 0700 by the
/// server, "Data at rest"), typically not the user the server runs as, says so instead of
/// claiming there is no database and suggesting to start a server there.
#[test]
fn admin_commands_say_when_the_database_is_out_of_reach() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("imnotify.sqlite3"), b"").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["webhook", "list", "--data-dir"])
        .arg(&data)
        .env_remove("IMNOTIFY_DATA_DIR")
        .env_remove("IMNOTIFY_DATABASE_URL");
    // Root enters any directory, so as root the command runs as nobody; otherwise the
    // directory is closed to its owner.
    let root = std::fs::metadata(&data).unwrap().uid() == 0;
    if root {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = cmd.output().unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the database {}",
            data.join("imnotify.sqlite3").display()
        )) && err.contains("run this command as that user"),
        "{err}"
    );
    assert!(!err.contains("no imnotify database"), "{err}");
}

/// A `listen` value that is not an IP address and port (`localhost:8080`, a bare port) from the
/// flag, the environment or the file stops `serve` with a message that names the value and
/// shows what to write, not only "invalid socket address syntax".
#[test]
fn a_bad_listen_address_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("imnotify.toml");
    std::fs::write(&file, "listen = \"localhost:0\"\n").unwrap();
    let serve = || {
        let mut c = Command::new(BIN);
        c.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .env_remove("IMNOTIFY_LISTEN")
            .env_remove("IMNOTIFY_CONFIG")
            .env_remove("IMNOTIFY_DATABASE_URL");
        c
    };
    let runs = [
        (
            "flag",
            "\"localhost:0\"",
            serve().args(["--listen", "localhost:0"]).output(),
        ),
        (
            "env",
            "\"8080\"",
            serve().env("IMNOTIFY_LISTEN", "8080").output(),
        ),
        (
            "file",
            "\"localhost:0\"",
            serve().arg("--config").arg(&file).output(),
        ),
    ];
    for (source, value, out) in runs {
        let out = out.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{source}: {err}");
        assert!(
            err.contains(&format!("{value} is not an IP address and port"))
                && err.contains("127.0.0.1:8080"),
            "{source}: {err}"
        );
    }
    assert!(!data.exists(), "a refused start made {}", data.display());
}

/// A configuration value of the wrong type is named as the operator wrote it: the file's key
/// (`limits.rate.burst`, not figment's `default.limits.rate.burst`, a profile nobody wrote)
/// with the file, and the environment's variable by its full name.
#[test]
fn a_bad_config_value_names_the_key_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imnotify.toml");
    std::fs::write(&file, "[limits.rate]\nburst = \"many\"\n").unwrap();
    let run = |env: Option<(&str, &str)>, config: bool| {
        let mut c = Command::new(BIN);
        c.args(["webhook", "list", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("IMNOTIFY_CONFIG")
            .env_remove("IMNOTIFY_DATABASE_URL");
        if config {
            c.arg("--config").arg(&file);
        }
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(None, true);
    assert!(
        err.contains("for key limits.rate.burst in ") && err.contains("imnotify.toml"),
        "{err}"
    );
    assert!(!err.contains("default."), "{err}");
    let err = run(Some(("IMNOTIFY_LIMITS__RATE__BURST", "many")), false);
    assert!(err.contains("for IMNOTIFY_LIMITS__RATE__BURST"), "{err}");
}

/// The first-start banner of `serve` with `args` (on loopback, port 0): its stdout lines up
/// to the sign-in hint.
fn banner_with(args: &[&str], envs: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    common::first_start_banner_with(&dir.path().join("data"), args, envs)
}

/// A server that requires HTTPS (the default beyond loopback) but speaks plain HTTP and trusts
/// no TLS proxy refuses every credential: its banner says so, and how to fix it, before the
/// webhook and its curl line, which would fail. With a trusted proxy it does not.
#[test]
fn the_banner_warns_when_no_credential_can_work() {
    let banner = banner_with(&["--require-https", "true"], &[]);
    let warn = banner
        .iter()
        .position(|l| l.starts_with("Warning: HTTPS is required"));
    let hook = banner.iter().position(|l| l.starts_with("Webhook: "));
    assert!(
        matches!((warn, hook), (Some(w), Some(h)) if w < h),
        "{banner:#?}"
    );
    let line = &banner[warn.unwrap()];
    assert!(
        line.contains("tls.cert")
            && line.contains("trusted_proxies")
            && line.contains("--require-https false"),
        "{line}"
    );
    let proxied = [("IMNOTIFY_TRUSTED_PROXIES", r#"["127.0.0.1"]"#)];
    for (args, envs) in [
        (&["--require-https", "true"][..], &proxied[..]),
        (&["--require-https", "false"], &[]),
        (&[], &[]),
    ] {
        let banner = banner_with(args, envs);
        assert!(
            banner.iter().any(|l| l.starts_with("Webhook: ")),
            "{banner:#?}"
        );
        assert!(
            !banner.iter().any(|l| l.starts_with("Warning: ")),
            "{args:?} {envs:?}: {banner:#?}"
        );
    }
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
    // The file's data_dir is the one the command looked in.
    refused_for_no_database(&out, &data.display().to_string());
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
    // It parsed, and its data_dir is the default one.
    refused_for_no_database(&out, "./data");
}

#[test]
fn user_update_turns_email_notifications_off_and_on() {
    let s = Server::start();
    let email_on = || -> i64 {
        s.query_value(
            "SELECT CAST(email_notifications AS INTEGER) FROM users WHERE id = 1",
            &[],
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

#[test]
fn a_second_user_with_the_same_email_is_refused() {
    let s = Server::start();
    let ok = |args: &[&str]| {
        let out = s.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let refused = |args: &[&str]| {
        let out = s.cli(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("already used by user 5"), "{err}");
    };
    ok(&[
        "user",
        "add",
        "--id",
        "5",
        "--name",
        "A",
        "--email",
        "ann@example.com",
    ]);
    refused(&[
        "user",
        "add",
        "--id",
        "6",
        "--name",
        "B",
        "--email",
        "Ann@Example.com",
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "6",
        "--name",
        "B",
        "--email",
        "boris@example.com",
    ]);
    refused(&["user", "update", "--id", "6", "--email", "ANN@example.com"]);
    // A user keeps (or re-sets) its own address; users without one do not collide.
    ok(&["user", "update", "--id", "5", "--email", "ann@example.com"]);
    ok(&["user", "add", "--id", "8", "--name", "C"]);
    ok(&["user", "add", "--id", "9", "--name", "D"]);
}

#[test]
fn unknown_config_keys_are_refused_in_the_file_and_warned_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("imnotify.toml");
    std::fs::write(&cfg, "[limits]\nmax_conections = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["user", "add", "--id", "4", "--name", "Cfg", "--config"])
        .arg(&cfg)
        .env("IMNOTIFY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");

    let out = Command::new(BIN)
        .args(["user", "add", "--id", "4", "--name", "Env"])
        .env("IMNOTIFY_DATA_DIR", dir.path())
        .env("IMNOTIFY_LIMITS__MAX_CONECTIONS", "5")
        .env("IMNOTIFY_PASSWORD", "a long enough password")
        .output()
        .unwrap();
    // Warned as the configuration is read, before the command runs (here it then finds no
    // database in the directory).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IMNOTIFY_LIMITS__MAX_CONECTIONS"), "{err}");
    assert!(!err.contains("IMNOTIFY_PASSWORD"), "{err}");
}

/// Every key in README's configuration table is in `serve --help` and in `config.example.toml`.
#[test]
fn every_readme_config_key_is_in_help_and_the_example_file() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let section = readme.split("\n## Configuration").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let section = section.split("\n\n|").nth(1).unwrap();
    let section = section.split("\n\n").next().unwrap();
    let mut keys = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        // The first cell may hold several keys: `smtp.username`, `smtp.password`.
        let cell = line.split('|').nth(1).unwrap();
        keys.extend(cell.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    assert!(keys.len() > 30, "{keys:?}");
    for key in &keys {
        let env = format!("IMNOTIFY_{}", key.to_uppercase().replace('.', "__"));
        assert!(help.contains(&env), "serve --help lacks {env} ({key})");
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{leaf} =")) || l.starts_with(&format!("{leaf}="))
            }),
            "config.example.toml lacks {key}"
        );
    }
}

/// With `public_url`, the banner still names the socket it listens on, then the public URL.
#[test]
fn banner_names_the_listen_address_and_the_public_url() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://public.example.com",
        ])
        .env("IMNOTIFY_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("To read it");
        rest.push(line);
        if done || rest.len() > 10 {
            break;
        }
    }
    let third = rest
        .iter()
        .find(|l| l.starts_with("Webhook: "))
        .unwrap()
        .clone();
    let hint = rest.last().unwrap().clone();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.starts_with("imnotify listening on http://127.0.0.1:") && !first.contains("public"),
        "{first}"
    );
    assert_eq!(second, "Public URL: https://public.example.com");
    assert!(
        third.starts_with("Webhook: https://public.example.com/rest/1/"),
        "{third}"
    );
    assert!(
        hint.contains("user password --id 1") && hint.contains("sign in as 1"),
        "{hint}"
    );
}

/// The banner's "To read it in the page" command works when pasted as printed: it names the
/// binary by a path the shell finds (`cargo run` puts no `imnotify` on `PATH`) and the data
/// directory this server uses (otherwise it would open `./data`, where user 1 does not exist).
#[test]
fn banner_password_command_works_when_pasted() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("my data");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("IMNOTIFY_DATA_DIR")
        .env_remove("IMNOTIFY_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hint = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(12)
        .map(Result::unwrap)
        .find(|l| l.starts_with("To read it in the page: "))
        .expect("the banner's sign-in hint");
    let command = hint
        .strip_prefix("To read it in the page: ")
        .and_then(|rest| rest.split(", then open").next())
        .unwrap()
        .replace("'...'", "'a long passphrase'");
    let out = Command::new("sh")
        .args(["-c", &command])
        .env_remove("IMNOTIFY_DATA_DIR")
        .env_remove("IMNOTIFY_DATABASE_URL")
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Password set for user 1"),
        "{command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A first start that cannot bind (the port is taken) makes no user yet: the next start
/// still prints the webhook and the admin token, which are shown only once.
#[test]
fn a_failed_bind_does_not_use_up_the_first_start_banner() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &busy, "--data-dir"])
        .arg(dir.path())
        .env_remove("IMNOTIFY_DATABASE_URL")
        .env_remove("IMNOTIFY_ADMIN__TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("binding {busy}")), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Webhook:"),
        "no banner from a start that failed"
    );

    let banner = common::first_start_banner(dir.path());
    assert!(
        banner.iter().any(|l| l.starts_with("Webhook: http://")),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.starts_with("Admin token (")),
        "{banner:?}"
    );
}
