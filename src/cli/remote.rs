//! The command-line forms of the admin API (`imnotify requests list`, `imnotify fault add`,
//! `imnotify clock advance`, `imnotify reset`, `imnotify mail list`): each calls the running server over HTTP with
//! the admin token and prints the server's JSON answer.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value as Json};

use crate::config::Config;

/// Where the server is and how to prove we may use its admin API.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// The running server's base URL [default: from listen/public_url]
    #[arg(long, value_name = "URL", env = "IMNOTIFY_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// The admin token [env: IMNOTIFY_ADMIN__TOKEN, or admin.token in the configuration]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
    /// The request journal, newest first (GET /admin/api/requests)
    List {
        /// Only this method (exact)
        #[arg(long)]
        method: Option<String>,
        /// Only this HTTP status
        #[arg(long)]
        status: Option<u16>,
        /// Only entries after this id
        #[arg(long)]
        since_id: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Empty the journal (DELETE /admin/api/requests)
    Clear {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum FaultCommand {
    /// Make matching calls fail or answer late (POST /admin/api/faults)
    Add {
        /// A method name, or * for every method
        #[arg(long)]
        method: String,
        /// An error code of the catalogue, e.g. QUERY_LIMIT_EXCEEDED or expired_token
        #[arg(long)]
        error: Option<String>,
        /// Answer this many milliseconds late
        #[arg(long)]
        delay_ms: Option<u64>,
        /// End the fault after this many matches
        #[arg(long)]
        times: Option<u64>,
        /// The chance (0 to 1) that a matching call is faulted
        #[arg(long)]
        probability: Option<f64>,
        /// Seed for --probability, for runs that repeat
        #[arg(long)]
        seed: Option<u64>,
        /// Only calls acting as this user
        #[arg(long)]
        user_id: Option<i64>,
        /// Only calls of this OAuth application
        #[arg(long)]
        client_id: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The faults with their hit counts (GET /admin/api/faults)
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove one fault (DELETE /admin/api/faults/ID)
    Remove {
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove every fault (DELETE /admin/api/faults)
    Clear {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClockCommand {
    /// The server's clock (GET /admin/api/clock)
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Move the server's clock forward (POST /admin/api/clock)
    Advance {
        #[arg(long)]
        seconds: f64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Back to real time (DELETE /admin/api/clock)
    Reset {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// Captured mails, newest first, with headers and both parts (GET /admin/api/mail)
    List {
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Forget the captured mails (DELETE /admin/api/mail)
    Clear {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Remove notifications, the journal, faults and limiter state (POST /admin/api/reset)
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Remove users, webhooks and apps too
    #[arg(long)]
    pub no_keep_directory: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// One admin API call: method, path (with query), body.
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Json>,
    pub remote: RemoteArgs,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>, remote: RemoteArgs) -> Call {
        Call {
            method,
            path: path.into(),
            body: None,
            remote,
        }
    }
}

pub fn requests(c: RequestsCommand) -> Call {
    match c {
        RequestsCommand::List {
            method,
            status,
            since_id,
            limit,
            remote,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(m) = method {
                q.append_pair("method", &m);
            }
            if let Some(s) = status {
                q.append_pair("status", &s.to_string());
            }
            if let Some(s) = since_id {
                q.append_pair("since_id", &s.to_string());
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
            Call::new("GET", format!("/admin/api/requests?{}", q.finish()), remote)
        }
        RequestsCommand::Clear { remote } => Call::new("DELETE", "/admin/api/requests", remote),
    }
}

pub fn fault(c: FaultCommand) -> Call {
    match c {
        FaultCommand::Add {
            method,
            error,
            delay_ms,
            times,
            probability,
            seed,
            user_id,
            client_id,
            remote,
        } => {
            let mut body = json!({"method": method});
            let fields = [
                ("error", json!(error)),
                ("delay_ms", json!(delay_ms)),
                ("times", json!(times)),
                ("probability", json!(probability)),
                ("seed", json!(seed)),
                ("user_id", json!(user_id)),
                ("client_id", json!(client_id)),
            ];
            for (k, v) in fields {
                if !v.is_null() {
                    body[k] = v;
                }
            }
            Call {
                body: Some(body),
                ..Call::new("POST", "/admin/api/faults", remote)
            }
        }
        FaultCommand::List { remote } => Call::new("GET", "/admin/api/faults", remote),
        FaultCommand::Remove { id, remote } => {
            Call::new("DELETE", format!("/admin/api/faults/{id}"), remote)
        }
        FaultCommand::Clear { remote } => Call::new("DELETE", "/admin/api/faults", remote),
    }
}

pub fn clock(c: ClockCommand) -> Call {
    match c {
        ClockCommand::Show { remote } => Call::new("GET", "/admin/api/clock", remote),
        ClockCommand::Advance { seconds, remote } => Call {
            body: Some(json!({"advance_seconds": seconds})),
            ..Call::new("POST", "/admin/api/clock", remote)
        },
        ClockCommand::Reset { remote } => Call::new("DELETE", "/admin/api/clock", remote),
    }
}

pub fn mail(c: MailCommand) -> Call {
    match c {
        MailCommand::List { limit, remote } => {
            let q = limit.map(|l| format!("?limit={l}")).unwrap_or_default();
            Call::new("GET", format!("/admin/api/mail{q}"), remote)
        }
        MailCommand::Clear { remote } => Call::new("DELETE", "/admin/api/mail", remote),
    }
}

pub fn reset(a: ResetArgs) -> Call {
    Call {
        body: Some(json!({"keep_directory": !a.no_keep_directory})),
        ..Call::new("POST", "/admin/api/reset", a.remote)
    }
}

/// Sends the call and prints the answer; a status other than 2xx is an error carrying the
/// server's message.
pub async fn run(config: Config, call: Call) -> anyhow::Result<()> {
    let base = call
        .remote
        .url
        .clone()
        .unwrap_or_else(|| config.base_url(config.listen));
    let token = call
        .remote
        .token
        .clone()
        .or_else(|| config.admin.token.clone())
        .context("the admin token is needed: --token, IMNOTIFY_ADMIN__TOKEN or admin.token")?;
    let url = format!("{}{}", base.trim_end_matches('/'), call.path);
    let (status, body) =
        tokio::task::spawn_blocking(move || send(&url, call.method, &token, call.body))
            .await
            .context("the HTTP call panicked")??;
    if !(200..300).contains(&status) {
        bail!("the server answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

fn send(url: &str, method: &str, token: &str, body: Option<Json>) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(150)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let mut resp = match method {
        "GET" => agent.get(url).header("Authorization", &auth).call(),
        "DELETE" => agent.delete(url).header("Authorization", &auth).call(),
        _ => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or_else(|| json!({})).to_string()),
    }
    .with_context(|| format!("calling {}", url.split('?').next().unwrap_or(url)))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .context("reading the answer")?;
    Ok((status, text))
}
