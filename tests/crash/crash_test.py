#!/usr/bin/env python3
"""Crash test: load the real server from several clients, kill -9 it at random moments,
restart it on the same data directory, and check that nothing acknowledged was lost.

Python 3 standard library only. Usage:

    python3 tests/crash/crash_test.py --bin target/debug/imnotify --kills 20

What counts as correct (issue 7, DECISIONS D3/D4):
  * every acknowledged id exists with exactly the content sent (text, text_out, tag, sub_tag,
    attach presence), unless a later add with the same (recipient, stored tag) may have replaced
    it: one that was acknowledged with a higher id, or one that was never answered (in flight at
    a kill, so it may have committed) and was sent in the same or a later server run;
  * no id was acknowledged twice, and every stored row of this run was sent exactly once;
  * no (recipient, stored tag) holds more than one notification.
The last line is "crash test: N passed, M failed" so that CI output is easy to read.

Backends: SQLite in the data directory by default. With IMNOTIFY_TEST_PG set to a PostgreSQL
server's URL (scripts/pg.sh start prints one), the server runs on a fresh database there
(scripts/pg.sh newdb) across all its restarts, and the check reads it with psql: the same test
on both backends. PostgreSQL itself is not killed here (tests/cluster.rs restarts it).
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

PG_SERVER = os.environ.get("IMNOTIFY_TEST_PG") or None
PG_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "pg.sh")


def pg(*args):
    """scripts/pg.sh with these arguments (newdb, copydb, sql); its output."""
    return subprocess.run(
        ["bash", PG_SH, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


class Db:
    """The server's database, read after the run: SQLite's file or a PostgreSQL database."""

    def __init__(self, sqlite_path=None, pg_url=None):
        self.sqlite_path = sqlite_path
        self.pg_url = pg_url

    def rows(self, query):
        """The rows of `query` as tuples, columns in order."""
        if self.pg_url:
            # json (not jsonb) keeps the columns in their order.
            out = pg("sql", self.pg_url,
                     "SELECT coalesce(json_agg(q), '[]') FROM (%s) q" % query)
            return [tuple(r.values()) for r in json.loads(out)]
        db = sqlite3.connect("file:%s?mode=ro" % self.sqlite_path, uri=True)
        try:
            return db.execute(query).fetchall()
        finally:
            db.close()

    def tampered_copy(self, work, statements):
        """A copy of the database with `statements` (SQL both dialects accept) applied."""
        if self.pg_url:
            url = pg("copydb", self.pg_url)
            pg("sql", url, "; ".join(statements))
            return Db(pg_url=url)
        copy = os.path.join(work, "selftest.sqlite3")
        # The backup API copies what the WAL holds too; a file copy would not.
        src = sqlite3.connect("file:%s?mode=ro" % self.sqlite_path, uri=True)
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        for statement in statements:
            dst.execute(statement)
        dst.commit()
        dst.close()
        return Db(sqlite_path=copy)

    def remove(self):
        if self.pg_url:
            pg("sql", PG_SERVER, 'DROP DATABASE IF EXISTS "%s"' % self.pg_url.rsplit("/", 1)[1])
        else:
            os.remove(self.sqlite_path)


RECIPIENTS = [1, 2, 3]
CLIENT_IDS = [None, "app.alpha", "app.beta"]
TAGS = [None, "T0", "T1", "T2", "T3"]


def stored_tag(client_id, value):
    """D3: webhook tags are namespaced by "custom" + CLIENT_ID, and ignored without one."""
    if not client_id or not value:
        return None
    ns = hashlib.md5(("custom" + client_id).encode()).hexdigest()[:5]
    return "MP|%s|%s" % (ns, value)


class Server:
    def __init__(self, binary, data_dir, log, database_url=None):
        self.binary = binary
        self.data_dir = data_dir
        self.log = log
        # serve and the admin commands get the database through the environment, so their
        # command lines are the same on both backends.
        self.env = dict(os.environ)
        self.env.pop("IMNOTIFY_DATA_DIR", None)
        self.env.pop("IMNOTIFY_DATABASE_URL", None)
        if database_url:
            self.env["IMNOTIFY_DATABASE_URL"] = database_url
        self.proc = None
        self.addr = None
        self.hook = None

    def start(self):
        cmd = [self.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        cmd += self.serve_args()
        env = dict(self.env)
        # Every acknowledged id must survive: the per-recipient cap would remove old ones on
        # purpose in a long run, so it is off here (tests/storage.rs covers it).
        env["IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER"] = "0"
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited during start; see its log")
            if line.startswith("imnotify listening on "):
                self.addr = line.split("http://", 1)[1].strip()
                if self.hook is not None:
                    break
            elif line.startswith("Webhook: "):
                self.hook = "/rest/" + line.split("/rest/", 1)[1].strip()
                break
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def serve_args(self):
        """The load is far above a Bitrix24 plan's rate limit on purpose: where the server has
        limits (`serve --no-limits`), they are switched off, as this test is about durability."""
        if not hasattr(self, "_serve_args"):
            help_text = subprocess.run(
                [self.binary, "serve", "--help"], capture_output=True, text=True
            ).stdout
            self._serve_args = ["--no-limits"] if "--no-limits" in help_text else []
        return self._serve_args

    def cli(self, *args):
        subprocess.run(
            [self.binary, *args, "--data-dir", self.data_dir],
            check=True,
            stdout=subprocess.DEVNULL,
            env=self.env,
        )

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class Ledger:
    """What was sent, and what the server answered, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}  # marker -> request record
        self.acked_ids = []
        self.rejected = []

    def add(self, rec):
        with self.lock:
            self.sent[rec["marker"]] = rec

    def ack(self, rec, rid):
        with self.lock:
            rec["id"] = rid
            self.acked_ids.append(rid)

    def reject(self, rec, status, body):
        with self.lock:
            rec["rejected"] = True
            self.rejected.append((rec["marker"], status, body[:200]))


def make_request(rng, worker, seq, generation):
    marker = "w%d-s%d-g%d" % (worker, seq, generation)
    client_id = rng.choice(CLIENT_IDS)
    tag = rng.choice(TAGS)
    sub_tag = rng.choice([None, "S|" + marker])
    body = {"USER_ID": rng.choice(RECIPIENTS), "MESSAGE": "crash %s text" % marker}
    if rng.random() < 0.5:
        body["MESSAGE_OUT"] = "crash %s out" % marker
    if client_id:
        body["CLIENT_ID"] = client_id
    if tag:
        body["TAG"] = tag
    if sub_tag:
        body["SUB_TAG"] = sub_tag
    if rng.random() < 0.3:
        body["ATTACH"] = [{"MESSAGE": "attach %s" % marker}, {"DELIMITER": {"SIZE": 200}}]
    return {
        "marker": marker,
        "generation": generation,
        "body": body,
        "recipient": body["USER_ID"],
        "text": body["MESSAGE"],
        "text_out": body.get("MESSAGE_OUT", ""),
        "tag": stored_tag(client_id, tag),
        "sub_tag": stored_tag(client_id, sub_tag),
        "attach": "ATTACH" in body,
        "id": None,
        "rejected": False,
    }


def client(worker, server, ledger, stop, generation, seed):
    rng = random.Random(seed)
    seq = 0
    url = server.hook + "im.notify.system.add"
    while not stop.is_set():
        seq += 1
        rec = make_request(rng, worker, seq, generation)
        # Recorded before sending: once the bytes leave, the server may commit it.
        ledger.add(rec)
        try:
            conn = http.client.HTTPConnection(server.addr, timeout=10)
            conn.request(
                "POST",
                url,
                body=json.dumps(rec["body"]),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            data = resp.read().decode()
            conn.close()
        except (OSError, http.client.HTTPException):
            # No answer: in flight when the server died. It may or may not have committed.
            return
        if resp.status == 200:
            result = json.loads(data).get("result")
            if isinstance(result, int) and not isinstance(result, bool):
                ledger.ack(rec, result)
                continue
        ledger.reject(rec, resp.status, data)


def check(db, ledger):
    failures = []
    rows = {}
    for row in db.rows(
        "SELECT id, user_id, text, text_out, tag, sub_tag, attach FROM notifications "
        "WHERE text LIKE 'crash %'"
    ):
        rows[row[0]] = row
    dup_keys = db.rows(
        "SELECT user_id, tag, COUNT(*) FROM notifications WHERE tag IS NOT NULL "
        "GROUP BY user_id, tag HAVING COUNT(*) > 1"
    )

    for key in dup_keys:
        failures.append("(recipient, tag) %r holds %d notifications" % (key[:2], key[2]))

    acked = [r for r in ledger.sent.values() if r["id"] is not None]
    unanswered = [r for r in ledger.sent.values() if r["id"] is None and not r["rejected"]]
    ids = [r["id"] for r in acked]
    if len(ids) != len(set(ids)):
        failures.append("an id was acknowledged more than once")

    # Per (recipient, tag): acknowledged ids, and the earliest run with an unanswered add.
    newest_acked = {}
    unanswered_from = {}
    for r in acked:
        if r["tag"] is not None:
            key = (r["recipient"], r["tag"])
            newest_acked[key] = max(newest_acked.get(key, 0), r["id"])
    for r in unanswered:
        if r["tag"] is not None:
            key = (r["recipient"], r["tag"])
            unanswered_from[key] = min(unanswered_from.get(key, 1 << 30), r["generation"])

    lost = 0
    replaced = 0
    for r in acked:
        row = rows.get(r["id"])
        if row is None:
            key = (r["recipient"], r["tag"])
            may_be_replaced = r["tag"] is not None and (
                newest_acked[key] > r["id"]
                or unanswered_from.get(key, 1 << 30) <= r["generation"]
            )
            if may_be_replaced:
                replaced += 1
            else:
                lost += 1
                failures.append("acknowledged id %d (%s) is lost" % (r["id"], r["marker"]))
            continue
        got = {
            "recipient": row[1],
            "text": row[2],
            "text_out": row[3],
            "tag": row[4],
            "sub_tag": row[5],
            "attach": row[6] is not None,
        }
        want = {k: r[k] for k in got}
        if got != want:
            failures.append("id %d differs: sent %r, stored %r" % (r["id"], want, got))
            continue
        if r["attach"] and ("attach " + r["marker"]) not in row[6]:
            failures.append("id %d: the attachment is not the one sent" % r["id"])

    # Every stored row is one that was sent, and was stored once.
    by_text = {}
    acked_ids = set(ids)
    for rid, row in rows.items():
        by_text.setdefault(row[2], []).append(rid)
    sent_texts = {r["text"]: r for r in ledger.sent.values()}
    for text, rids in by_text.items():
        if len(rids) > 1:
            failures.append("%r stored %d times (ids %r)" % (text, len(rids), rids))
        r = sent_texts.get(text)
        if r is None:
            failures.append("stored row %r was never sent" % text)
        elif r["id"] is not None and r["id"] not in rids:
            failures.append("%r stored under id %r, acknowledged as %d" % (text, rids, r["id"]))
        elif r["id"] is None and any(i in acked_ids for i in rids):
            failures.append("unanswered %r stored under an acknowledged id" % text)
    return failures, {
        "acknowledged": len(acked),
        "present": len(acked) - lost - replaced,
        "replaced": replaced,
        "lost": lost,
        "unanswered": len(unanswered),
        "rows": len(rows),
    }


def self_test(db, ledger, work):
    """Shows the checker can fail: on a copy of the database, drop one acknowledged row that no
    later add could have replaced, and add a second row under a used (recipient, tag)."""
    victim = next(
        (r for r in ledger.sent.values() if r["id"] is not None and r["tag"] is None), None
    )
    tagged = next((r for r in ledger.sent.values() if r["tag"] is not None), None)
    if victim is None or tagged is None:
        return ["self-test: the run had no untagged or no tagged add to tamper with"]
    # The tags are ours (stored_tag): hex and letters, safe to write inline.
    insert = (
        "INSERT INTO notifications (user_id, notify_type, text, tag, created_at) "
        "VALUES (%d, 4, '%%s', '%s', 0)" % (tagged["recipient"], tagged["tag"])
    )
    copy = db.tampered_copy(work, [
        "DELETE FROM notifications WHERE id = %d" % victim["id"],
        insert % "crash tampered",
        insert % "crash tampered 2",
    ])
    failures, stats = check(copy, ledger)
    copy.remove()
    lost = stats["lost"] == 1 and any(str(victim["id"]) in f for f in failures)
    dup = any("holds" in f for f in failures)
    phantom = any("never sent" in f for f in failures)
    if lost and dup and phantom:
        return []
    return ["self-test: the checker missed tampering (lost %r, dup %r, phantom %r)" % (lost, dup, phantom)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("IMNOTIFY_BIN", "target/debug/imnotify"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--min-run", type=float, default=0.3, help="shortest load before a kill (s)")
    ap.add_argument("--max-run", type=float, default=2.0, help="longest load before a kill (s)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    print("crash test: seed %d, %d kills, %d clients" % (seed, args.kills, args.clients))
    work = tempfile.mkdtemp(prefix="imnotify-crash-")
    data_dir = os.path.join(work, "data")
    log = open(os.path.join(work, "server.log"), "ab")
    database_url = pg("newdb", PG_SERVER, "crash") if PG_SERVER else None
    print("crash test: backend %s" % ("PostgreSQL at " + PG_SERVER if PG_SERVER else "SQLite"))
    server = Server(os.path.abspath(args.bin), data_dir, log, database_url)
    server.start()
    for uid in RECIPIENTS[1:]:
        server.cli("user", "add", "--id", str(uid), "--name", "User%d" % uid)

    ledger = Ledger()
    survived = 0
    for generation in range(args.kills + 1):
        if generation > 0:
            server.start()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=client,
                args=(w, server, ledger, stop, generation, rng.randrange(1 << 32)),
            )
            for w in range(args.clients)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(args.min_run, args.max_run))
        if generation < args.kills:
            server.kill9()
            survived += 1
        else:
            # The last run ends cleanly, so the check reads a closed database.
            stop.set()
            for t in threads:
                t.join()
            code = server.terminate()
            if code != 0:
                print("crash test: server exited with %d on SIGTERM" % code)
        stop.set()
        for t in threads:
            t.join()

    if database_url:
        db = Db(pg_url=database_url)
    else:
        db = Db(sqlite_path=os.path.join(data_dir, "imnotify.sqlite3"))
    failures, stats = check(db, ledger)
    failures += self_test(db, ledger, work)
    for m, status, body in ledger.rejected:
        failures.append("request %s rejected with %d: %s" % (m, status, body))
    print(
        "crash test: kills survived %d; acknowledged ids checked %d: present %d, "
        "replaced by a later same-tag add %d, lost %d; unanswered (in flight at a kill) %d; "
        "rows %d" % (
            survived,
            stats["acknowledged"],
            stats["present"],
            stats["replaced"],
            stats["lost"],
            stats["unanswered"],
            stats["rows"],
        )
    )
    for f in failures[:50]:
        print("FAIL: " + f)
    if stats["acknowledged"] == 0:
        failures.append("no request was acknowledged: the test tested nothing")
        print("FAIL: no request was acknowledged")
    log.close()
    if failures or args.keep:
        print("crash test: data and server log kept in " + work)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print("crash_test: %d passed, %d failed" % (0 if failures else 1, 1 if failures else 0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
