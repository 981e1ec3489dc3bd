//! The README's admin commands, run as written, and their documented `--json` samples checked
//! against the real output: each sample must parse and have the same keys (at every depth) as
//! what the command prints.

mod common;

use std::collections::BTreeSet;

use common::{Server, BIN};
use serde_json::Value;

/// How the README runs the admin commands.
const PREFIX: &str = "./target/release/imnotify ";

/// A command of a `sh` block and the sample printed under it (`# {...}`), if any.
struct Documented {
    line: usize,
    command: String,
    sample: Option<String>,
}

fn documented_commands(readme: &str) -> Vec<Documented> {
    let mut out: Vec<Documented> = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(sample) = trimmed.strip_prefix("# {") {
            if let Some(last) = out.last_mut() {
                if last.sample.is_none() && last.command.contains("--json") {
                    last.sample = Some(format!("{{{sample}"));
                }
            }
            continue;
        }
        let joined = format!("{pending}{trimmed}");
        if let Some(rest) = joined.strip_suffix('\\') {
            pending = rest.to_owned();
            continue;
        }
        pending.clear();
        if joined.starts_with(PREFIX) {
            out.push(Documented {
                line: i + 1,
                command: joined,
                sample: None,
            });
        }
    }
    out
}

/// The keys of every object in `v`, by path, so that two values of the same shape compare
/// equal whatever their contents. Arrays contribute their first element's shape.
fn shape(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                shape(child, &p, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                shape(first, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Every string the sample shows, with the value the real run printed at the same key, so that
/// a later command naming one (`--client-id local....`) can use the real one.
fn substitutions(sample: &Value, real: &Value, out: &mut Vec<(String, String)>) {
    if let (Value::Object(s), Value::Object(r)) = (sample, real) {
        for (k, sv) in s {
            match (sv, r.get(k)) {
                (Value::String(a), Some(Value::String(b))) if a.len() > 3 && a != b => {
                    out.push((a.clone(), b.clone()))
                }
                (sv, Some(rv)) => substitutions(sv, rv, out),
                _ => {}
            }
        }
    }
}

fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn readme_admin_commands_run_and_their_json_samples_match() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let commands = documented_commands(&readme);
    let samples = commands.iter().filter(|c| c.sample.is_some()).count();
    assert!(
        samples >= 3,
        "expected the README's --json samples (webhook add, app add, app token), found {samples}"
    );
    // Every admin command in a shell block uses the one documented form.
    let mut in_sh = false;
    for (i, line) in readme.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
        } else if in_sh {
            assert!(
                !t.starts_with("imnotify "),
                "README.md:{}: run admin commands as `{PREFIX}...`",
                i + 1
            );
        }
    }

    let s = Server::start();
    let mut subst: Vec<(String, String)> = Vec::new();
    for doc in &commands {
        let mut command = doc.command.clone();
        for (documented, real) in &subst {
            command = command.replace(documented, real);
        }
        // `send` calls the server: the documented webhook becomes this server's first one.
        command = command.replace(
            "http://127.0.0.1:8080/rest/1/k2q8w0d7r1m5x9zt/",
            &format!("{}{}", s.base, s.hook),
        );
        let mut args = shell_words(&command);
        args.remove(0);
        if args.first().is_some_and(|a| a == "serve") {
            continue;
        }
        // `migrate` needs a PostgreSQL server of the reader's; tests/migrate.rs runs it against
        // a real one. Here only its flags are checked, through --help.
        if args.first().is_some_and(|a| a == "migrate") {
            let help = std::process::Command::new(BIN)
                .args(["migrate", "--help"])
                .output()
                .expect("running imnotify");
            let help = String::from_utf8_lossy(&help.stdout);
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.contains(flag.as_str()),
                    "README.md:{}: migrate has no {flag}",
                    doc.line
                );
            }
            continue;
        }
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&args)
            .arg("--data-dir")
            .arg(s.data_dir())
            .env_remove("IMNOTIFY_DATA_DIR")
            .env_remove("IMNOTIFY_DATABASE_URL");
        // The server's database, when the suite runs on PostgreSQL.
        if let Some(url) = &s.database_url {
            cmd.env("IMNOTIFY_DATABASE_URL", url);
        }
        let out = cmd.output().expect("running imnotify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "README.md:{}: `{}` failed: {}{}",
            doc.line,
            doc.command,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let Some(sample) = &doc.sample else { continue };
        let documented: Value = serde_json::from_str(sample).unwrap_or_else(|e| {
            panic!(
                "README.md:{}: the sample is not JSON ({e}): {sample}",
                doc.line
            )
        });
        let real: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "README.md:{}: the command printed no JSON ({e}): {stdout}",
                doc.line
            )
        });
        let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
        shape(&documented, "", &mut want);
        shape(&real, "", &mut got);
        assert_eq!(
            want, got,
            "README.md:{}: the sample's keys differ from the real output of `{}`:\n{}",
            doc.line, doc.command, real
        );
        substitutions(&documented, &real, &mut subst);
    }
}

/// The checker must be able to fail: a sample with a missing key has a different shape.
#[test]
fn the_shape_check_sees_a_missing_key() {
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    shape(
        &serde_json::json!({"user_id": 5, "scope": ["im"], "rate_burst": null}),
        "",
        &mut a,
    );
    shape(
        &serde_json::json!({"user_id": 5, "scope": ["im"]}),
        "",
        &mut b,
    );
    assert_ne!(a, b);
    let docs =
        documented_commands("```sh\n./target/release/imnotify a \\\n  --json\n# {\"k\":1}\n```\n");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].command, "./target/release/imnotify a --json");
    assert_eq!(docs[0].sample.as_deref(), Some("{\"k\":1}"));
}

/// A quick-start call: the method, its JSON body and the answer the README shows for it.
struct QuickCall {
    line: usize,
    method: String,
    body: Value,
    answer: Option<Value>,
}

/// The `curl` lines of the quick start (the first-start webhook of user 1), in order, each with
/// the answer shown under it: a `# {...}` line, or the `json` block that follows. `{...}` in a
/// shown answer stands for an elided `time` block.
fn quick_start_calls(readme: &str) -> Vec<QuickCall> {
    const HOOK: &str = "http://127.0.0.1:8080/rest/1/k2q8w0d7r1m5x9zt/";
    let parse = |text: &str| -> Value {
        serde_json::from_str(&text.replace("{...}", "{}"))
            .unwrap_or_else(|e| panic!("a README answer is not JSON ({e}): {text}"))
    };
    let lines: Vec<&str> = readme.lines().collect();
    let mut calls: Vec<QuickCall> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if let (true, Some(at)) = (t.starts_with("curl "), t.find(HOOK)) {
            let method = t[at + HOOK.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let body = match t.split_once("-d '") {
                Some((_, rest)) => parse(rest.split('\'').next().unwrap_or("{}")),
                None => serde_json::json!({}),
            };
            calls.push(QuickCall {
                line: i + 1,
                method,
                body,
                answer: None,
            });
        } else if let (Some(sample), Some(last)) = (t.strip_prefix("# {"), calls.last_mut()) {
            last.answer
                .get_or_insert_with(|| parse(&format!("{{{sample}")));
        } else if t == "```json" {
            if let Some(last) = calls.last_mut().filter(|c| c.answer.is_none()) {
                last.answer = lines.get(i + 1).map(|l| parse(l.trim()));
            }
        }
        i += 1;
    }
    calls
}

/// Drops what differs from run to run: dates.
fn without_dates(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("date");
            map.values_mut().for_each(without_dates);
        }
        Value::Array(items) => items.iter_mut().for_each(without_dates),
        _ => {}
    }
}

/// The quick start's calls, run in order against a fresh server, answer what the README shows:
/// among them the notification sent without `CLIENT_ID` has lost its TAG and the one with it
/// kept it, namespaced (D3), and the read-back shows both.
#[test]
fn readme_quick_start_answers_are_the_real_ones() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let calls = quick_start_calls(&readme);
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    for expected in [
        "im.notify.system.add",
        "im.notify.get",
        "im.notify.read",
        "im.notify.read.all",
    ] {
        assert!(
            methods.contains(&expected),
            "the quick start shows no {expected}: {methods:?}"
        );
    }
    let s = Server::start();
    let mut checked = 0;
    for call in &calls {
        let r = s.post_json(&format!("{}{}", s.hook, call.method), &call.body);
        assert_eq!(r.status, 200, "README.md:{}: {}", call.line, r.body);
        let Some(answer) = &call.answer else { continue };
        let (mut want, mut got) = (answer["result"].clone(), r.json()["result"].clone());
        without_dates(&mut want);
        without_dates(&mut got);
        assert_eq!(
            want, got,
            "README.md:{}: {} answers otherwise than shown",
            call.line, call.method
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} answers were checked");
}

/// The lines of README's "Testing your integration" section.
fn toolkit_section(readme: &str) -> Vec<(usize, &str)> {
    readme
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("## Testing your integration"))
        .skip(1)
        .take_while(|(_, l)| !l.starts_with("## "))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// One `curl` of the section, as a request: method, path, headers, body.
fn curl_request(
    words: &[String],
    base: &str,
    token: &str,
) -> (String, String, Vec<String>, String) {
    let (mut method, mut url, mut headers, mut body) = (None, String::new(), Vec::new(), None);
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        match w.as_str() {
            "-X" => method = it.next().cloned(),
            "-H" => headers.push(it.next().unwrap().replace("$TOKEN", token)),
            "-d" => body = it.next().cloned(),
            w if w.starts_with('-') => {}
            w => url = w.replace("$BASE", base),
        }
    }
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    let path = url.strip_prefix(base).unwrap_or(&url).to_owned();
    (method, path, headers, body.unwrap_or_default())
}

/// Every `curl` in the "Testing your integration" section's shell blocks, run in order against
/// a server with mail capture (after a notification, so the journal and the mail are not
/// empty): each answers 2xx, and each `# {...}` sample under one has the real answer's keys.
/// The CI job's `imnotify serve` line uses only flags that `serve` has.
#[test]
fn readme_toolkit_calls_work_and_their_samples_match() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let section = toolkit_section(&readme);
    assert!(
        !section.is_empty(),
        "no \"Testing your integration\" section"
    );
    let token = "readme-admin-token-0123456789";
    let s = Server::start_with(common::Options {
        envs: vec![
            ("IMNOTIFY_ADMIN__TOKEN".into(), token.into()),
            ("IMNOTIFY_EMAIL__CAPTURE".into(), "true".into()),
        ],
        ..Default::default()
    });
    s.add_user(7, &["--email", "anna@example.org"]);
    s.notify(serde_json::json!({"USER_ID": 7, "MESSAGE": "Build failed"}));

    let mut in_sh = false;
    let mut last: Option<(usize, String)> = None;
    let mut checked = 0;
    for (line, text) in &section {
        let t = text.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if t.starts_with("curl ") {
            let (method, path, headers, body) = curl_request(&shell_words(t), &s.base, token);
            let h: Vec<(&str, &str)> = headers.iter().filter_map(|h| h.split_once(": ")).collect();
            let r = s.request(&method, &path, &h, body.as_bytes());
            assert!(
                (200..300).contains(&r.status),
                "README.md:{line}: `{t}` answered {}: {}",
                r.status,
                r.body
            );
            last = Some((*line, r.body));
            checked += 1;
        } else if let Some(sample) = t.strip_prefix("# {") {
            let (at, body) = last.take().expect("a sample under a curl");
            let documented: Value = serde_json::from_str(&format!("{{{sample}"))
                .unwrap_or_else(|e| panic!("README.md:{line}: the sample is not JSON ({e})"));
            let mut real: Value = serde_json::from_str(&body).unwrap();
            // The mail is kept a moment after the clock moved (the worker looks every second).
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while real["mail"] == serde_json::json!([]) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let r = s.request(
                    "GET",
                    "/admin/api/mail",
                    &[("Authorization", &format!("Bearer {token}"))],
                    b"",
                );
                real = r.json();
            }
            let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
            shape(&documented, "", &mut want);
            shape(&real, "", &mut got);
            assert_eq!(
                want, got,
                "README.md:{at}: the sample's keys differ: {real}"
            );
        }
    }
    assert!(checked >= 6, "only {checked} curl calls found");

    // The CI job's serve line.
    let serve = section
        .iter()
        .find(|(_, l)| l.contains("imnotify serve "))
        .expect("the CI job starts imnotify serve")
        .1;
    let help = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in serve.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "serve has no {flag}: {serve}");
    }
}
