use clap::Parser;
use imnotify::cli::{self, Cli, Command};
use imnotify::config::Overrides;

/// mimalloc instead of glibc's malloc: allocation and free were a fifth of the CPU of a durable
/// add (issue 15 profile, `perf record` on the release build). libmimalloc-sys's `override`
/// feature makes it libc's `malloc` too, so SQLite and other C code use it as well. Argon2id's
/// 19 MiB blocks are given back to the system after each password check (`auth::password`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before any file is created: the database, its WAL and anything else this process writes
    // are for its own user only (0600 files, 0700 directories).
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let args = Cli::parse();
    // `send` is a client: no configuration, data directory or runtime of the server's.
    let args = match args.command {
        Command::Send(a) => return cli::send::run(a),
        command => Cli {
            global: args.global,
            command,
        },
    };
    let overrides = match &args.command {
        Command::Serve(s) => Overrides {
            listen: s.listen,
            public_url: s.public_url.clone(),
            require_https: s.require_https,
            tls_cert: s.tls_cert.clone(),
            tls_key: s.tls_key.clone(),
            no_limits: s.no_limits,
            ..Overrides::default()
        },
        _ => Overrides::default(),
    };
    let config = match cli::load_config(&args.global, overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imnotify: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // Held to the end of main, so queued log lines are written before the process exits.
    let _log = imnotify::telemetry::init(&config.log);
    for name in imnotify::config::unknown_env_vars(std::env::vars()) {
        tracing::warn!(variable = %name, "ignoring unknown environment variable {name}: no such config key");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async move {
        match args.command {
            Command::Serve(s) => imnotify::app::serve(config, s.fixtures).await,
            other => cli::run_admin(config, other).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imnotify: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
