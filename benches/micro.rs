//! Micro-benchmarks of the per-request CPU work that does not touch the network or the disk:
//! the parameter decoder, the ATTACH normaliser and text normalisation.
//!
//! `cargo bench --bench micro` measures; `cargo test --all-targets` runs each benchmark once in
//! criterion's test mode, which only checks that it works. The BB-code renderer gets a benchmark
//! here when it exists; until then `normalize_text` stands for the text path.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use imnotify::domain::{attach, notify};
use imnotify::protocol::params::{self, DecodeLimits};
use imnotify::value::Value;
use rand::SeedableRng as _;
use std::hint::black_box;

/// The bodies of bench/notify.lua, so the micro and the load benchmark speak about the same work.
const FORM_PLAIN: &str =
    "USER_ID=1&MESSAGE=Backup+%231+completed%23BR%23Size%3A+1.2+GB&MESSAGE_OUT=Backup+completed";
const FORM_ATTACH: &str = "USER_ID=1&MESSAGE=Ticket+%233+was+updated&CLIENT_ID=bench\
&TAG=TICKET_3&SUB_TAG=TICKET%7C3\
&ATTACH%5B0%5D%5BMESSAGE%5D=Status+changed+to+%5Bb%5Din+progress%5B%2Fb%5D\
&ATTACH%5B1%5D%5BLINK%5D%5BNAME%5D=Ticket+3\
&ATTACH%5B1%5D%5BLINK%5D%5BLINK%5D=https%3A%2F%2Fdesk.example.com%2Ft%2F3\
&ATTACH%5B2%5D%5BUSER%5D%5BNAME%5D=Anna+Smith";
const JSON_ATTACH: &str = r##"{"USER_ID":1,"MESSAGE":"Deploy #1 needs approval","CLIENT_ID":"bench","TAG":"DEPLOY_1","SUB_TAG":"DEPLOY|1","ATTACH":{"ID":1,"COLOR":"#29619b","BLOCKS":[{"MESSAGE":"API v2 is [b]ready[/b] for production"},{"LINK":{"NAME":"Pipeline 1","LINK":"https://ci.example.com/p/1"}},{"DELIMITER":{"SIZE":200,"COLOR":"#c2c2c2"}},{"GRID":[{"NAME":"Branch","VALUE":"main","DISPLAY":"LINE","WIDTH":120},{"NAME":"Commit","VALUE":"4e05d4f","DISPLAY":"LINE"}]}]}}"##;

fn decoder(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("params");
    g.bench_function("parse_str/plain", |b| {
        b.iter(|| params::parse_str(black_box(FORM_PLAIN), &limits))
    });
    g.bench_function("parse_str/attach", |b| {
        b.iter(|| params::parse_str(black_box(FORM_ATTACH), &limits))
    });
    g.bench_function("decode_request/json_attach", |b| {
        let body = Bytes::from_static(JSON_ATTACH.as_bytes());
        b.iter(|| {
            rt.block_on(params::decode_request(
                true,
                None,
                Some("application/json"),
                black_box(body.clone()),
                &limits,
            ))
        })
    });
    g.bench_function("decode_request/form_attach", |b| {
        let body = Bytes::from_static(FORM_ATTACH.as_bytes());
        b.iter(|| {
            rt.block_on(params::decode_request(
                true,
                None,
                Some("application/x-www-form-urlencoded"),
                black_box(body.clone()),
                &limits,
            ))
        })
    });
    g.finish();
}

fn attach_normalizer(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let form = params::parse_str(FORM_ATTACH, &limits);
    let short = form.get_str("ATTACH").expect("form ATTACH").clone();
    let json: serde_json::Value = serde_json::from_str(JSON_ATTACH).expect("JSON body");
    let full = Value::from_json(json["ATTACH"].clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("attach");
    g.bench_function("normalize/short_form", |b| {
        b.iter(|| attach::normalize(black_box(&short), 1_764_000_000, 30_720, &mut rng))
    });
    g.bench_function("normalize/full_form", |b| {
        b.iter(|| attach::normalize(black_box(&full), 1_764_000_000, 30_720, &mut rng))
    });
    g.finish();
}

fn text(c: &mut Criterion) {
    let short = "Build #42 of [b]imnotify[/b] finished#BR#in 42 s";
    let long = "A line of a long report with [b]markup[/b] and #BR# breaks. ".repeat(400);
    let mut g = c.benchmark_group("text");
    g.bench_function("normalize_text/short", |b| {
        b.iter(|| notify::normalize_text(black_box(short)))
    });
    g.bench_function("normalize_text/truncated_24k", |b| {
        b.iter(|| notify::normalize_text(black_box(&long)))
    });
    g.finish();
}

criterion_group!(benches, decoder, attach_normalizer, text);
criterion_main!(benches);
