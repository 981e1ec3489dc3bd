//! The PostgreSQL backend's own guarantees (issue 14), through the real binary: two instances
//! on one database. Runs only under `IMNOTIFY_TEST_PG` (see `scripts/pg.sh`); the rest of the
//! suite runs on both backends unchanged.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{pg_query, test_pg, Options, Server};
use serde_json::json;

fn on_postgres(test: &str) -> bool {
    if test_pg().is_none() {
        eprintln!("{test}: not run: needs IMNOTIFY_TEST_PG (scripts/pg.sh start)");
        return false;
    }
    true
}

/// A second instance on the first one's database.
fn second_instance(first: &Server) -> Server {
    Server::start_with(Options {
        shared_database: first.database_url.clone(),
        ..Options::default()
    })
}

fn add(s: &Server, hook: &str, body: serde_json::Value) -> i64 {
    let r = s.post_json(&format!("{hook}im.notify.system.add"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"].as_i64().expect("an id")
}

#[test]
fn concurrent_tag_replaces_on_two_instances_leave_only_the_newest() {
    if !on_postgres("concurrent_tag_replaces") {
        return;
    }
    let a = Server::start();
    let b = second_instance(&a);
    let hook = a.hook.clone();
    let returned: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (a, b, hook) = (&a, &b, &hook);
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let s = if (w + i) % 2 == 0 { a } else { b };
                            add(
                                s,
                                hook,
                                json!({"USER_ID": 1, "MESSAGE": format!("{w}/{i}"), "CLIENT_ID": "race", "TAG": "RACE"}),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(returned.len(), 80);
    let left = a.pg("SELECT id FROM notifications WHERE user_id = 1 ORDER BY id");
    assert_eq!(
        left.len(),
        1,
        "one notification per (recipient, tag): {left:?}"
    );
    let newest = returned.iter().max().unwrap();
    assert_eq!(left[0], newest.to_string(), "the one left is the newest");
    let chat = a.pg("SELECT total || '/' || unread FROM notify_chats WHERE user_id = 1");
    assert_eq!(chat, ["1/1"], "the counters agree");
}

#[test]
fn a_reader_resuming_after_any_id_misses_no_event_of_concurrent_writers() {
    if !on_postgres("event_order") {
        return;
    }
    let a = Server::start();
    let b = second_instance(&a);
    let url = a.database_url.clone().unwrap();
    let hook = a.hook.clone();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (seen, all) = std::thread::scope(|scope| {
        // The reader polls like a resuming client: ids after the last one it saw.
        let reader = scope.spawn(|| {
            let mut last = 0i64;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                for id in pg_query(
                    &url,
                    &format!("SELECT id FROM events WHERE id > {last} ORDER BY id"),
                ) {
                    let id: i64 = id.parse().unwrap();
                    seen.push(id);
                    last = id;
                }
                if finished {
                    return seen;
                }
            }
        });
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (a, b, hook) = (&a, &b, &hook);
                scope.spawn(move || {
                    for i in 0..15 {
                        let s = if (w + i) % 2 == 0 { a } else { b };
                        // Untagged, to several recipients' chats: no per-user lock orders them.
                        add(
                            s,
                            hook,
                            json!({"USER_ID": 1, "MESSAGE": format!("{w}/{i}")}),
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().unwrap();
        let all: Vec<i64> = a
            .pg("SELECT id FROM events ORDER BY id")
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        (seen, all)
    });
    assert_eq!(all.len(), 90);
    let seen_set: BTreeSet<i64> = seen.iter().copied().collect();
    let missed: Vec<i64> = all
        .iter()
        .filter(|i| !seen_set.contains(i))
        .copied()
        .collect();
    assert!(missed.is_empty(), "the resuming reader skipped {missed:?}");
    assert_eq!(seen, all, "seen once each, in id order");
}

#[test]
fn with_the_database_gone_calls_fail_fast_healthz_reports_it_and_service_comes_back() {
    if !on_postgres("database_down") {
        return;
    }
    let s = Server::start();
    let server = test_pg().unwrap();
    let url = s.database_url.clone().unwrap();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let before = add(&s, &s.hook, json!({"USER_ID": 1, "MESSAGE": "before"}));
    // Unreachable for this server only: no new connections, the open ones ended.
    pg_query(
        &server,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    );
    let started = Instant::now();
    let r = s.post_json(
        &format!("{}im.notify.system.add", s.hook),
        &json!({"USER_ID": 1, "MESSAGE": "during"}),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["error"], "INTERNAL_SERVER_ERROR", "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = s.get("/healthz");
        if h.status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "healthz still {}", h.status);
        std::thread::sleep(Duration::from_millis(100));
    }

    pg_query(
        &server,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let r = s.post_json(
            &format!("{}im.notify.system.add", s.hook),
            &json!({"USER_ID": 1, "MESSAGE": "after"}),
        );
        if r.status == 200 && s.get("/healthz").status == 200 {
            break r.json()["result"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "not back: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(after > before, "ids never go backwards");
    let ids = s.pg("SELECT id FROM notifications ORDER BY id");
    assert!(
        ids.contains(&before.to_string()),
        "acknowledged before the outage: {ids:?}"
    );
    assert!(ids.contains(&after.to_string()));
}
