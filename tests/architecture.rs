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

/// The module of `src/` a file belongs to: its first path component.
fn module_of(file: &str) -> String {
    let first = file.split('/').next().unwrap_or(file);
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a line names through `crate::` (or `imnotify::` from the binary),
/// including each name of a `crate::{a, b::c}` group.
fn named_modules(line: &str, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(root) {
        let before = rest[..i].chars().last();
        rest = &rest[i + root.len()..];
        // `foo_crate::x` or `xcrate::` is not the crate root; `$crate::` is.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Every edge `from -> to` between distinct top-level modules, with one place it is made.
fn import_graph() -> std::collections::BTreeMap<(String, String), String> {
    let mut edges = std::collections::BTreeMap::new();
    for (file, text) in sources() {
        let from = module_of(&file);
        if from == "lib" {
            continue;
        }
        let root = if from == "main" {
            "imnotify::"
        } else {
            "crate::"
        };
        for (n, line) in code_lines(&text) {
            for to in named_modules(line, root) {
                if to != from {
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("src/{file}:{n}"));
                }
            }
        }
    }
    edges
}

/// The layer table of ARCHITECTURE.md's "Layering" section: module → layer.
fn layers() -> std::collections::BTreeMap<String, u32> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("reading ARCHITECTURE.md");
    let section = doc
        .split("## Layering")
        .nth(1)
        .expect("ARCHITECTURE.md has a Layering section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut layers = std::collections::BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(layer) = cells[1].parse::<u32>() else {
            continue;
        };
        for m in cells[2].split(',') {
            let m = m.trim().trim_matches('`');
            assert!(
                layers.insert(m.to_owned(), layer).is_none(),
                "{m} is listed twice"
            );
        }
    }
    assert!(layers.len() > 10, "the layer table was not found");
    layers
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let layers = layers();
    let graph = import_graph();
    let mut wrong = Vec::new();
    let modules: std::collections::BTreeSet<String> = sources()
        .iter()
        .map(|(f, _)| module_of(f))
        .filter(|m| m != "lib")
        .collect();
    for m in &modules {
        if !layers.contains_key(m) {
            wrong.push(format!("src/{m}: not in ARCHITECTURE.md's layer table"));
        }
    }
    for ((from, to), at) in &graph {
        // Names that are not modules (a macro, a re-exported item) are not edges.
        if !modules.contains(to) {
            continue;
        }
        let (Some(a), Some(b)) = (layers.get(from), layers.get(to)) else {
            continue;
        };
        if b >= a {
            wrong.push(format!(
                "{at}: {from} (layer {a}) imports {to} (layer {b}); only lower layers may be imported"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_named_invariants_hold() {
    let graph = import_graph();
    let edge = |a: &str, b: &str| graph.get(&(a.to_owned(), b.to_owned()));
    for (from, to) in [
        ("protocol", "methods"),
        ("protocol", "server"),
        ("protocol", "web"),
        ("web", "server"),
        ("auth", "methods"),
        ("store", "auth"),
        ("store", "protocol"),
        ("store", "methods"),
    ] {
        assert!(
            edge(from, to).is_none(),
            "{from} imports {to} at {:?}",
            edge(from, to)
        );
    }
    for ((from, to), at) in &graph {
        if from == "domain" {
            assert!(
                ["value", "error"].contains(&to.as_str()),
                "{at}: domain imports {to}; it may import only value and error"
            );
        }
    }
}

#[test]
fn there_is_no_import_cycle() {
    let graph = import_graph();
    let mut next: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (from, to) in graph.keys() {
        next.entry(from.as_str()).or_default().push(to.as_str());
    }
    // Depth-first search; a node met again while on the stack closes a cycle.
    fn visit<'a>(
        n: &'a str,
        next: &std::collections::BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for m in next.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = Default::default();
    for n in next.keys() {
        if let Some(cycle) = visit(n, &next, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The parser the layering tests rely on sees plain, grouped and macro paths.
#[test]
fn the_import_parser_reads_every_form() {
    assert_eq!(
        named_modules("use crate::store::Store;", "crate::"),
        ["store"]
    );
    assert_eq!(
        named_modules("use crate::{auth::Caller, value};", "crate::"),
        ["auth", "value"]
    );
    assert_eq!(
        named_modules("$crate::protocol::dispatch::MethodSpec {", "crate::"),
        ["protocol"]
    );
    assert!(named_modules("use tokio_crate::x;", "crate::").is_empty());
    let graph = import_graph();
    assert!(graph.contains_key(&("methods".to_owned(), "protocol".to_owned())));
}
