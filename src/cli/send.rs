//! `imnotify send`: one notification through `im.notify.system.add`, by the Rust client
//! (`imnotify-client`), to any server that speaks the Bitrix24 API (issue 17).
//!
//! Exit status by the kind of failure: 0 sent, 1 the server refused the call (a method error),
//! 2 usage (bad arguments, unreadable `--attach`, a URL the client will not use), 3 the
//! credential (`ErrorKind::Auth`), 4 a limit (`ErrorKind::Limit`), 5 no answer (network).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use imnotify_client::{Client, Error, ErrorKind, Notify, RetryPolicy};

/// The arguments of `imnotify send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The webhook URL (`https://PORTAL/rest/USER/CODE/`); required, by this flag or the
    /// environment
    #[arg(
        long,
        env = "IMNOTIFY_WEBHOOK",
        value_name = "URL",
        hide_env_values = true
    )]
    pub webhook: Option<String>,
    /// The recipient's user id
    #[arg(long, value_name = "N")]
    pub user: u64,
    /// The text (BB codes allowed)
    #[arg(long, value_name = "TEXT")]
    pub message: String,
    /// The text for e-mail and push (MESSAGE_OUT)
    #[arg(long, value_name = "T")]
    pub message_out: Option<String>,
    /// TAG: a later notification with the same tag replaces this one
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    /// SUB_TAG
    #[arg(long, value_name = "T")]
    pub sub_tag: Option<String>,
    /// CLIENT_ID: the namespace of --tag and --sub-tag; a webhook call's tags are ignored
    /// without it (DECISIONS D3)
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// ATTACH from a JSON file: the full form ({"BLOCKS": [...]}) or a list of blocks
    #[arg(long, value_name = "FILE.json")]
    pub attach: Option<PathBuf>,
    /// Print the whole answer as JSON instead of the new id
    #[arg(long)]
    pub json: bool,
    /// Allow plain http:// to a host other than loopback (the webhook code travels in clear)
    #[arg(long)]
    pub allow_http: bool,
    /// Seconds to wait for each HTTP exchange
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
}

/// The exit status for an error (see the module docs).
pub fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Api { code, .. } => match code.kind() {
            ErrorKind::Auth => 3,
            ErrorKind::Limit => 4,
            ErrorKind::Method => 1,
        },
        Error::Network(_) => 5,
        Error::Config(_) => 2,
        _ => 1,
    }
}

/// Runs `imnotify send`; prints the id (or the answer) on stdout, one line with the code on
/// stderr on failure.
pub fn run(a: SendArgs) -> ExitCode {
    // Not clap's `required`: its error names only the flag, and a script that set the
    // variable's name wrong needs to hear of the variable too.
    let Some(webhook) = a.webhook.clone() else {
        eprintln!("imnotify send: no webhook URL: pass --webhook URL or set IMNOTIFY_WEBHOOK");
        return ExitCode::from(2);
    };
    match send(a, &webhook) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imnotify send: {e}{}", hint(&e, &webhook));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// A hint for the failures whose message names the symptom, not the cause. An `https://` URL
/// to a plain-HTTP server (imnotify without `tls.cert`, say) fails in the handshake with
/// rustls's "received corrupt message of type InvalidContentType".
fn hint(e: &Error, webhook: &str) -> &'static str {
    match e {
        Error::Network(m)
            if webhook.trim_start().starts_with("https://") && m.contains("InvalidContentType") =>
        {
            " (the server answered in plain HTTP: is the URL http://?)"
        }
        _ => "",
    }
}

fn send(a: SendArgs, webhook: &str) -> Result<String, Error> {
    let mut n = Notify::new(a.user, &a.message);
    n.message_out = a.message_out;
    n.tag = a.tag;
    n.sub_tag = a.sub_tag;
    n.client_id = a.client_id;
    let attach = a.attach.as_deref().map(read_attach).transpose()?;
    let client = Client::builder()
        .webhook(webhook)
        .allow_http(a.allow_http)
        .timeout(Duration::from_secs(a.timeout.max(1)))
        // One call: no client-side bucket to wait on; a short retry budget so a script is not
        // held for long.
        .rate_limit(0, 0)
        .retry(RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        })
        .build()?;
    // Repeated after a broken connection only when the server keeps the tag (with CLIENT_ID,
    // D3), so that the repeat replaces its earlier copy instead of duplicating it.
    let mut params = n.to_params();
    if let Some(attach) = attach {
        params["ATTACH"] = attach;
    }
    let answer = client.call_full::<serde_json::Value>(
        "im.notify.system.add",
        params,
        n.replaces_on_repeat(false),
    )?;
    let id = imnotify_client::added_id(answer.result.clone())?;
    Ok(if a.json {
        serde_json::to_string(&answer).unwrap_or_default()
    } else {
        id.to_string()
    })
}

/// The file's JSON as the ATTACH parameter, unchanged: the server normalises it (and answers
/// `ATTACH_ERROR` for one without a valid block), as Bitrix24 does with any client's.
fn read_attach(path: &std::path::Path) -> Result<serde_json::Value, Error> {
    let usage =
        |e: &dyn std::fmt::Display| Error::Config(format!("--attach {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| usage(&e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| usage(&e))?;
    if !(v.is_array() || v.is_object()) {
        return Err(usage(&"not a JSON object or list of blocks"));
    }
    Ok(v)
}
