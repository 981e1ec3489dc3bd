//! The house rules of ARCHITECTURE.md that the compiler does not check, checked by reading
//! `src/`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("reading a source file");
            (rel, text)
        })
        .collect()
}

/// Code lines only: comments say what the rule is, and may name what they forbid.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// One clock (ARCHITECTURE.md, "One clock"): only `src/clock.rs` reads the wall clock, so the
/// test clock moves every time the server answers or stores.
#[test]
fn only_the_clock_module_reads_the_wall_clock() {
    const WALL_CLOCK: &[&str] = &[
        "SystemTime::now",
        "Utc::now",
        "Local::now",
        "OffsetDateTime::now",
        "UNIX_EPOCH.elapsed",
        "DefaultClock",
        "QuantaClock",
        "MonotonicClock",
    ];
    let mut offenders = Vec::new();
    for (file, text) in sources() {
        if file == "clock.rs" {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if let Some(p) = WALL_CLOCK.iter().find(|p| line.contains(*p)) {
                offenders.push(format!("src/{file}:{n}: {p}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "read the time through state.clock (src/clock.rs) instead:\n{}",
        offenders.join("\n")
    );
}

/// The lint above must be able to fail: it finds the reads the clock module itself makes.
#[test]
fn the_wall_clock_lint_sees_the_clock_module() {
    let (_, clock) = sources()
        .into_iter()
        .find(|(f, _)| f == "clock.rs")
        .expect("src/clock.rs exists");
    assert!(code_lines(&clock).any(|(_, l)| l.contains("SystemTime::now")));
}
