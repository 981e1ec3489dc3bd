#!/usr/bin/env python3
"""Runs the real Bitrix24 clients against the real imnotify binary and checks what they stored.

For every client this script:
  1. starts `imnotify serve` on a fresh data directory, speaking HTTPS through the server's own
     rustls with a certificate made for this run (a throw-away CA signs a leaf for localhost and
     127.0.0.1), because several official clients refuse plain http://;
  2. creates the users, the webhook and (when the server has OAuth) an application and a token
     with the admin CLI;
  3. runs the client's script (clients/*) with a JSON description of what to send; the script
     uses only the client's public API and reports, per case, what the client gave back;
  4. reads the database and checks every row the case should have left, and that nothing
     else was stored;
  5. stops the server.

Case names are `client.case`. Cases listed in xfail.txt (or in $INTEROP_XFAIL, comma separated,
which replaces the file) are expected to fail: they are still run and reported, but do not fail
the suite. The summary ends with a line `N passed, N failed` and the exit code is non-zero when
any case failed unexpectedly.

Backends: SQLite in the data directory by default. With IMNOTIFY_TEST_PG set to a PostgreSQL
server's URL (scripts/pg.sh start prints one), every server gets a fresh database there instead
(scripts/pg.sh newdb), and the checks read it with psql: the same cases, run on both backends.

Only the standard library is used here; the clients live in .deps/ (see run.sh).
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENTS_DIR = HERE / "clients"
DEPS = HERE / ".deps"
PYTHON = DEPS / "venv" / "bin" / "python"

# The recipient of every notification: user 5, as in the method page's curl examples.
RECIPIENT = 5
APP_NAME = "Interop App"
NOTIFY_TYPE_SYSTEM = 4  # src/domain/notify.rs

# IMNOTIFY_TEST_PG: the PostgreSQL server to run on (see the module docstring); None: SQLite.
PG_SERVER = os.environ.get("IMNOTIFY_TEST_PG") or None
PG_SH = HERE.parents[1] / "scripts" / "pg.sh"


def pg(*args: str) -> str:
    """scripts/pg.sh with these arguments (newdb, sql); its output."""
    return subprocess.run(["bash", str(PG_SH), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


# --------------------------------------------------------------------------------------------
# What each client sends. One place, so every client is held to the same expectations.
# --------------------------------------------------------------------------------------------

# The admin token every test server gets (IMNOTIFY_ADMIN__TOKEN): fixed, it is a test server.
ADMIN_TOKEN = "interop-admin-token-0123456789"


def plan_for(client: str) -> dict:
    """The notifications a client sends. Texts carry the client's name so rows are traceable."""
    client_id = f"interop-{client}"  # CLIENT_ID: makes a webhook's TAG/SUB_TAG apply (D3)
    tag = f"BUILD_{client.upper()}"
    first = {
        "USER_ID": RECIPIENT,
        "MESSAGE": f"[b]{client}[/b]: build #41 failed",
        "MESSAGE_OUT": f"{client}: build 41 failed (e-mail)",
        "TAG": tag,
        "SUB_TAG": f"{tag}|41",
        "CLIENT_ID": client_id,
        # Short form: a list of blocks.
        "ATTACH": [
            {"MESSAGE": f"{client} attach short form"},
            {"LINK": {"NAME": "Build log", "LINK": "https://ci.example.com/41"}},
        ],
    }
    second = {
        "USER_ID": RECIPIENT,
        "MESSAGE": f"[b]{client}[/b]: deploy #7 done",
        "MESSAGE_OUT": f"{client}: deploy 7 done (e-mail)",
        "TAG": f"DEPLOY_{client.upper()}",  # another TAG: stays
        "SUB_TAG": f"DEPLOY_{client.upper()}|7",
        "CLIENT_ID": client_id,
        # Full form: ID, COLOR and BLOCKS.
        "ATTACH": {
            "ID": 1,
            "COLOR": "#29619b",
            "BLOCKS": [
                {"MESSAGE": f"{client} attach full form"},
                {"DELIMITER": {"SIZE": 200, "COLOR": "#c8c8c8"}},
                {"GRID": [{"NAME": "Stage", "VALUE": "tests", "DISPLAY": "LINE"}]},
            ],
        },
    }
    third = {
        "USER_ID": RECIPIENT,
        "MESSAGE": f"  [b]{client}[/b]: build #42 failed#BR#see the log  ",
        "MESSAGE_OUT": f"{client}: build 42 failed (e-mail)",
        "TAG": tag,  # the first's TAG: this one replaces it for the same recipient (D4)
        "SUB_TAG": f"{tag}|42",
        "CLIENT_ID": client_id,
        # Short form again, with a link and a user block.
        "ATTACH": [
            {"MESSAGE": f"{client} attach, build 42"},
            {"LINK": {"NAME": "Build log", "LINK": "https://ci.example.com/42"}},
            {"USER": {"NAME": "Anna", "USER_ID": RECIPIENT}},
        ],
    }
    bad = {  # no USER_ID at all: USER_ID_EMPTY
        "MESSAGE": f"{client}: this must be refused",
        "TAG": f"{tag}_BAD",
        "CLIENT_ID": client_id,
    }
    # Batch and OAuth payloads use the full form (a dict): b24pysdk's typed method takes no list.
    batch = [
        {
            "USER_ID": RECIPIENT,
            "MESSAGE": f"{client}: batch one",
            "MESSAGE_OUT": f"{client}: batch one (e-mail)",
            "TAG": f"{tag}_BATCH1",
            "SUB_TAG": f"{tag}_BATCH|1",
            "CLIENT_ID": client_id,
            "ATTACH": {"BLOCKS": [{"MESSAGE": f"{client} batch attach one"}]},
        },
        {
            "USER_ID": RECIPIENT,
            "MESSAGE": f"{client}: batch two",
            "MESSAGE_OUT": f"{client}: batch two (e-mail)",
            "TAG": f"{tag}_BATCH2",
            "SUB_TAG": f"{tag}_BATCH|2",
            "CLIENT_ID": client_id,
            "ATTACH": {"BLOCKS": [{"MESSAGE": f"{client} batch attach two"}]},
        },
    ]
    oauth = {  # OAuth calls carry no CLIENT_ID: the app's client_id namespaces the tags
        "USER_ID": RECIPIENT,
        "MESSAGE": f"{client}: sent with an OAuth token",
        "MESSAGE_OUT": f"{client}: OAuth (e-mail)",
        "TAG": f"{tag}_OAUTH",
        "SUB_TAG": f"{tag}_OAUTH|1",
        "ATTACH": {"BLOCKS": [{"MESSAGE": f"{client} oauth attach"}]},
    }
    # Sent while the server answers QUERY_LIMIT_EXCEEDED three times (a fault of the admin API):
    # the client must retry until it is stored.
    retried = {
        "USER_ID": RECIPIENT,
        "MESSAGE": f"{client}: sent through three QUERY_LIMIT_EXCEEDED",
        "TAG": f"{tag}_RETRY",
        "CLIENT_ID": client_id,
    }
    refreshed = dict(oauth, MESSAGE=f"{client}: sent after a token refresh",
                     TAG=f"{tag}_REFRESH", SUB_TAG=f"{tag}_REFRESH|1",
                     ATTACH={"BLOCKS": [{"MESSAGE": f"{client} refresh attach"}]})
    return {
        "notifications": [first, second, third],
        "bad": bad,
        "batch": batch,
        "oauth_notification": oauth,
        "refresh_notification": refreshed,
        "fault_notification": retried,
        "fault_refresh_notification": dict(
            oauth, MESSAGE=f"{client}: sent after an injected expired_token",
            TAG=f"{tag}_EXPIRED", SUB_TAG=f"{tag}_EXPIRED|1",
            ATTACH={"BLOCKS": [{"MESSAGE": f"{client} expired attach"}]}),
    }


# The cases each client must report. `oauth*` cases need the server's OAuth (skipped otherwise).
CLIENT_CASES = {
    "curl": ["webhook_example", "oauth_example"],
    "b24jssdk": ["notify", "user_id_empty", "batch", "oauth", "oauth_refresh"],
    "b24pysdk": ["notify", "user_id_empty", "batch", "oauth", "oauth_refresh", "fault_refresh"],
    "fast_bitrix24": ["notify", "user_id_empty", "user_id_empty_batch", "batch", "oauth",
                      "oauth_refresh", "fault_retry"],
    "pybitrix24": ["notify", "user_id_empty", "batch", "oauth", "oauth_refresh"],
}
OAUTH_CASES = {"oauth", "oauth_refresh", "oauth_example", "fault_refresh"}


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------

def make_certs(d: Path) -> dict:
    """A CA and a leaf for localhost/127.0.0.1, made with the openssl CLI. Clients trust the CA
    through their own settings (NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, SSL_CERT_FILE,
    CURL_CA_BUNDLE); the server presents the leaf."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca_crt = d / "ca.key", d / "ca.pem"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "server.ext"
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", "/CN=imnotify interop test CA", "-keyout", str(ca_key),
        "-out", str(ca_crt))
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return {"ca": str(ca_crt), "cert": str(crt), "key": str(key)}


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    # The port must be known before the server starts: OAuth answers carry client_endpoint and
    # server_endpoint, which come from public_url, and some clients follow them.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, workdir: Path, certs: dict, public_port=None):
        self.binary = binary
        self.dir = workdir
        self.data = workdir / "data"
        self.certs = certs
        self.port = free_port()
        # Clients address the server by name, so TLS checks the certificate's DNS name.
        self.public_port = public_port or self.port
        self.base = f"https://localhost:{self.public_port}"
        # The admin API's token, for the cases that inject faults (fault_retry).
        self.env = dict(os.environ, IMNOTIFY_PUBLIC_URL=self.base,
                        IMNOTIFY_ADMIN__TOKEN=ADMIN_TOKEN)
        self.env.pop("IMNOTIFY_DATA_DIR", None)
        # On PostgreSQL the server and every admin command get the database through the
        # environment, so the command lines stay the same on both backends.
        self.database_url = pg("newdb", PG_SERVER, "interop") if PG_SERVER else None
        if self.database_url:
            self.env["IMNOTIFY_DATABASE_URL"] = self.database_url
        else:
            self.env.pop("IMNOTIFY_DATABASE_URL", None)
        self.proc = None
        self.webhook = None

    def start(self):
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data), "--tls-cert", self.certs["cert"],
             "--tls-key", self.certs["key"]],
            stdout=subprocess.PIPE, stderr=log, env=self.env, text=True)
        found = threading.Event()

        def read_stdout():
            # On a first start the server prints its webhook (URL from public_url):
            # "Webhook: https://localhost:PORT/rest/1/CODE/". Then keep draining stdout so the
            # server never blocks on a full pipe.
            for line in self.proc.stdout:
                if line.startswith("Webhook: ") and not found.is_set():
                    path = urllib.parse.urlparse(line.split(" ", 1)[1].strip()).path
                    parts = path.strip("/").split("/")
                    self.webhook = {"user_id": int(parts[1]), "code": parts[2]}
                    found.set()
            found.set()  # EOF: the server exited

        threading.Thread(target=read_stdout, daemon=True).start()
        found.wait(30)
        if not self.webhook:
            self.stop()
            raise RuntimeError(f"server did not start; see {self.dir / 'server.log'}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args, check=True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.binary, *args, "--data-dir", str(self.data)],
                           capture_output=True, text=True, env=self.env)
        if check and p.returncode != 0:
            raise RuntimeError(f"imnotify {' '.join(args)} failed: {p.stderr.strip()}")
        return p

    def has_oauth(self) -> bool:
        # The lead's `imnotify app` commands; until they exist, OAuth cases are skipped.
        return self.cli("app", "--help", check=False).returncode == 0

    def db_rows(self) -> dict:
        columns = ("id, user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach,"
                   " is_read")
        if self.database_url:
            # One JSON array of row objects; is_read comes back as a boolean, which compares
            # equal to SQLite's 0 and 1.
            out = pg("sql", self.database_url,
                     f"SELECT coalesce(json_agg(n), '[]') FROM (SELECT {columns} FROM notifications) n")
            return {r["id"]: r for r in json.loads(out)}
        con = sqlite3.connect(f"file:{self.data / 'imnotify.sqlite3'}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            rows = con.execute(f"SELECT {columns} FROM notifications").fetchall()
        finally:
            con.close()
        return {r["id"]: dict(r) for r in rows}


# --------------------------------------------------------------------------------------------
# A recording TLS proxy (run.sh --capture): shows the wire format each client really uses.
# --------------------------------------------------------------------------------------------

class CaptureProxy:
    """Terminates TLS with the test certificate, logs each request (method, target, the headers
    that matter, body) and forwards it unchanged to the server. Only used with --capture: the
    normal run lets every client talk to the server's own rustls directly."""

    def __init__(self, upstream_port: int, certs: dict, log_path: Path):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.log_path = log_path
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certs["cert"], certs["key"])
        self.up_ctx = ssl.create_default_context(cafile=certs["ca"])
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(f):
        line = f.readline()
        if not line:
            return None
        headers = []
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        body = f.read(length) if length else b""
        return line.decode("latin-1").rstrip("\r\n"), headers, body

    def _serve(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            f = tls.makefile("rb")
            while True:
                req = self._read_request(f)
                if req is None:
                    break
                line, headers, body = req
                self._log(line, headers, body)
                up = socket.create_connection(("127.0.0.1", self.upstream_port))
                up = self.up_ctx.wrap_socket(up, server_hostname="localhost")
                hdrs = [(k, v) for k, v in headers
                        if k.lower() not in ("connection", "keep-alive", "transfer-encoding")]
                out = [line] + [f"{k}: {v}" for k, v in hdrs] + ["Connection: close", "", ""]
                up.sendall("\r\n".join(out).encode("latin-1") + body)
                answer = b""
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                up.close()
                # The upstream closes after one answer; tell the client so too.
                head, _, rest = answer.partition(b"\r\n\r\n")
                head_lines = [h for h in head.split(b"\r\n")
                              if not h.lower().startswith(b"connection:")]
                tls.sendall(b"\r\n".join(head_lines + [b"Connection: close"]) + b"\r\n\r\n" + rest)
                break
            tls.close()
        except (OSError, ssl.SSLError):
            conn.close()

    def _log(self, line, headers, body):
        keep = {"content-type", "authorization", "accept", "user-agent"}
        entry = {
            "request": line,
            "headers": {k: v for k, v in headers if k.lower() in keep},
            "body": body.decode("utf-8", "replace")[:2000],
        }
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def ns(key: str) -> str:
    return hashlib.md5(key.encode()).hexdigest()[:5]


def expected_row(payload: dict, namespace_key, app_name=None) -> dict:
    """What the server must have stored for a payload (D3, D5, D6, D7)."""
    msg = payload["MESSAGE"].replace("#BR#", "\n").strip()
    out = payload.get("MESSAGE_OUT", "").strip()
    if app_name:
        msg = f"{app_name}\n{msg}"
        out = f"{app_name}\n{out}" if out else ""
    row = {"user_id": payload["USER_ID"], "author_id": 0, "notify_type": NOTIFY_TYPE_SYSTEM,
           "text": msg, "text_out": out, "tag": None, "sub_tag": None, "is_read": 0}
    if namespace_key is not None:
        prefix = f"MP|{ns(namespace_key)}|"
        if payload.get("TAG"):
            row["tag"] = prefix + payload["TAG"]
        if payload.get("SUB_TAG"):
            row["sub_tag"] = prefix + payload["SUB_TAG"]
    return row


def attach_texts(payload: dict) -> list:
    """The strings of the ATTACH that must be found in the stored, normalised ATTACH."""
    att = payload.get("ATTACH")
    blocks = att["BLOCKS"] if isinstance(att, dict) else (att or [])
    texts = []
    for b in blocks:
        if "MESSAGE" in b:
            texts.append(b["MESSAGE"])
        if "LINK" in b:
            texts.append(b["LINK"]["LINK"])
        if "GRID" in b:
            texts.extend(g["VALUE"] for g in b["GRID"])
        if "USER" in b:
            texts.append(b["USER"]["NAME"])
    return texts


def check_row(rows: dict, nid, payload: dict, namespace_key, app_name=None) -> list:
    """Problems with the row `nid` (empty when it is as expected)."""
    if not isinstance(nid, int) or isinstance(nid, bool):
        return [f"the client returned {nid!r}, not a notification id"]
    row = rows.get(nid)
    if row is None:
        return [f"notification {nid} is not in the database"]
    problems = []
    for k, v in expected_row(payload, namespace_key, app_name).items():
        if row[k] != v:
            problems.append(f"row {nid}: {k} is {row[k]!r}, expected {v!r}")
    if payload.get("ATTACH"):
        stored = row["attach"] or ""
        try:
            values = set(strings_in(json.loads(stored)))
        except ValueError:
            return problems + [f"row {nid}: attach is not JSON: {stored!r}"]
        wanted = attach_texts(payload)
        if isinstance(payload["ATTACH"], dict) and payload["ATTACH"].get("COLOR"):
            wanted.append(payload["ATTACH"]["COLOR"])
        for t in wanted:
            if t not in values:
                problems.append(f"row {nid}: attach lacks {t!r}: {stored!r}")
    return problems


def strings_in(v):
    """Every string inside a decoded JSON value."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings_in(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings_in(x)


def http_get_json(url: str, ca: str):
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Running one client
# --------------------------------------------------------------------------------------------

def client_command(client: str) -> list:
    if client == "b24jssdk":
        return ["node", str(CLIENTS_DIR / "b24jssdk.cjs")]
    return [str(PYTHON), str(CLIENTS_DIR / f"{client}_client.py")]


def run_client(client: str, binary: str, certs: dict, work: Path, capture: bool) -> list:
    """Runs one client against its own server; returns [(case, status, detail)]."""
    work.mkdir(parents=True)
    proxy = None
    server = Server(binary, work, certs)
    if capture:
        # Clients talk to the proxy, which forwards to the server; public_url names the proxy.
        proxy = CaptureProxy(server.port, certs, work / "wire.jsonl")
        server.public_port = proxy.port
        server.base = f"https://localhost:{proxy.port}"
        server.env["IMNOTIFY_PUBLIC_URL"] = server.base
    results = []
    try:
        server.start()
        server.cli("user", "add", "--id", str(RECIPIENT), "--name", "Anna")
        plan = plan_for(client)
        config = {
            "client": client,
            "base": server.base,
            "host": urllib.parse.urlparse(server.base).netloc,
            "webhook": dict(server.webhook,
                            url=f"{server.base}/rest/{server.webhook['user_id']}/"
                                f"{server.webhook['code']}/"),
            "plan": plan,
            "oauth": None,
            "admin": {"url": f"{server.base}/admin/api", "token": ADMIN_TOKEN},
        }
        oauth_skip = oauth_error = None
        if server.has_oauth():
            try:
                app = json.loads(server.cli("app", "add", "--name", APP_NAME, "--scope", "im",
                                            "--json").stdout)
                token = json.loads(server.cli("app", "token", "--client-id", app["client_id"],
                                              "--user-id", "1", "--json").stdout)
                # A second pair for fault_refresh: refresh tokens are single use.
                spare = json.loads(server.cli("app", "token", "--client-id", app["client_id"],
                                              "--user-id", "1", "--json").stdout)
                config["oauth"] = {"client_id": app["client_id"],
                                   "client_secret": app["client_secret"], **token,
                                   "spare": {"access_token": spare["access_token"],
                                             "refresh_token": spare["refresh_token"]}}
            except (RuntimeError, ValueError, KeyError) as e:
                # Only the OAuth cases fail; the webhook cases still run.
                oauth_error = f"could not make an app and a token: {type(e).__name__}: {e}"
        else:
            oauth_skip = "server has no 'imnotify app' commands yet (OAuth not merged)"

        env = dict(os.environ,
                   INTEROP_CONFIG=json.dumps(config),
                   # Each client trusts the test CA through its own documented setting.
                   NODE_EXTRA_CA_CERTS=certs["ca"],
                   REQUESTS_CA_BUNDLE=certs["ca"],
                   SSL_CERT_FILE=certs["ca"],
                   CURL_CA_BUNDLE=certs["ca"],
                   NODE_PATH=os.environ.get("INTEROP_NODE_MODULES", str(DEPS / "node_modules")))
        try:
            p = subprocess.run(client_command(client), capture_output=True, text=True, env=env,
                               timeout=60, cwd=work)
            out, err, code = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            out, err, code = (e.stdout or ""), (e.stderr or "") + "\n[timed out]", -1
            out = out.decode() if isinstance(out, bytes) else out
            err = err.decode() if isinstance(err, bytes) else err
        (work / "client.out").write_text(out)
        (work / "client.err").write_text(err)

        reports = {}
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if "case" in r:
                    reports[r["case"]] = r
        rows = server.db_rows()
        accounted = set()
        failed_cases = set()
        for case in CLIENT_CASES[client]:
            if case in OAUTH_CASES and config["oauth"] is None:
                results.append((case, "FAIL", oauth_error) if oauth_error
                               else (case, "SKIP", oauth_skip))
                continue
            r = reports.get(case)
            if r is None:
                tail = (err.strip().splitlines() or ["(no output)"])[-1]
                results.append((case, "FAIL", f"the client script reported nothing "
                                              f"(exit {code}): {tail}"))
                continue
            problems = [] if r.get("ok") else [r.get("detail") or "the client reported failure"]
            if r.get("ok"):
                problems += verify_case(client, case, r, plan, config, rows, certs, accounted)
            results.append((case, "PASS" if not problems else "FAIL", "; ".join(problems)
                            or r.get("detail", "")))
            if problems:
                failed_cases.add(case)
        # Nothing may be stored beyond what the cases account for: above all, a refused call
        # stores nothing. Rows sent by a case that already failed are left to that case's
        # report (an expected failure may still store some of its rows).
        excused = {p["MESSAGE"].replace("#BR#", "\n").strip()
                   for p in payloads_of(plan, failed_cases)}
        extra = sorted(i for i in set(rows) - accounted
                       if not any(rows[i]["text"].endswith(t) for t in excused))
        if extra:
            results.append(("db_nothing_else", "FAIL",
                            f"unexpected rows {extra}: " + "; ".join(
                                f"{i}: {rows[i]['text']!r}" for i in extra[:3])))
        else:
            results.append(("db_nothing_else", "PASS", f"{len(rows)} rows, all expected"))
    except Exception as e:  # a harness-level failure fails the client, not the whole suite
        results.append(("setup", "FAIL", f"{type(e).__name__}: {e}"))
    finally:
        server.stop()
        if proxy:
            proxy.close()
    return results


def payloads_of(plan: dict, cases) -> list:
    """The payloads the given cases send (the refused `bad` payload is never among them)."""
    by_case = {"notify": plan["notifications"], "batch": plan["batch"],
               "oauth": [plan["oauth_notification"]],
               "oauth_refresh": [plan["refresh_notification"]],
               "fault_retry": [plan["fault_notification"]],
               "fault_refresh": [plan["fault_refresh_notification"]]}
    return [p for c in cases for p in by_case.get(c, [])]


def verify_case(client, case, r, plan, config, rows, certs, accounted) -> list:
    """Server-side checks for one case the client says went well."""
    hook_ns = lambda p: "custom" + p["CLIENT_ID"]  # noqa: E731 (D3: webhook namespace key)
    ids = r.get("ids", [])
    problems = []
    if case == "notify":
        first, second, third = plan["notifications"]
        if len(ids) != 3:
            return [f"expected 3 ids, got {ids!r}"]
        a, b, c = ids
        if all(isinstance(i, int) for i in ids) and not a < b < c:
            problems.append(f"ids not increasing: {ids}")
        if a in rows:
            problems.append(f"notification {a} should have been replaced by {c} (same TAG)")
        problems += check_row(rows, b, second, hook_ns(second))
        problems += check_row(rows, c, third, hook_ns(third))
        accounted.update((b, c))
    elif case == "batch":
        if len(ids) != len(plan["batch"]):
            return [f"expected {len(plan['batch'])} ids, got {ids!r}"]
        for nid, payload in zip(ids, plan["batch"]):
            problems += check_row(rows, nid, payload, hook_ns(payload))
            accounted.add(nid)
    elif case == "fault_refresh":
        key = config["oauth"]["client_id"]
        problems += check_row(rows, ids[0] if ids else None, plan["fault_refresh_notification"],
                              key, APP_NAME)
        accounted.update(ids[:1])
        if r.get("faulted") != 1 or r.get("refreshes") != 1:
            problems.append(f"expected one faulted call and one refresh, got {r!r}")
    elif case == "fault_retry":
        payload = plan["fault_notification"]
        problems += check_row(rows, ids[0] if ids else None, payload, hook_ns(payload))
        accounted.update(ids[:1])
        if r.get("faulted") != 3:
            problems.append(f"the journal shows {r.get('faulted')} faulted calls, not 3")
    elif case in ("user_id_empty", "user_id_empty_batch"):
        pass  # nothing stored: db_nothing_else checks that
    elif case == "webhook_example":
        # The page's webhook example sends TAG and SUB_TAG without CLIENT_ID: they are ignored
        # (D3), while MESSAGE_OUT is kept (D5).
        payload = r["payload"]
        problems += check_row(rows, ids[0] if ids else None, payload, None)
        accounted.update(ids[:1])
    elif case in ("oauth", "oauth_example", "oauth_refresh"):
        payload = (r["payload"] if case == "oauth_example" else
                   plan["refresh_notification"] if case == "oauth_refresh" else
                   plan["oauth_notification"])
        key = config["oauth"]["client_id"]
        problems += check_row(rows, ids[0] if ids else None, payload, key, APP_NAME)
        accounted.update(ids[:1])
        if case == "oauth_refresh":
            problems += check_old_refresh_refused(r, config, certs)
    return problems


def check_old_refresh_refused(r, config, certs) -> list:
    """After the client refreshed, the refresh token it used must be refused (single use)."""
    old = config["oauth"]["refresh_token"]
    if r.get("new_refresh_token") in (None, old):
        return ["the client did not end up with a new refresh token"]
    q = urllib.parse.urlencode({"grant_type": "refresh_token",
                                "client_id": config["oauth"]["client_id"],
                                "client_secret": config["oauth"]["client_secret"],
                                "refresh_token": old})
    status, body = http_get_json(f"{config['base']}/oauth/token/?{q}", certs["ca"])
    if status == 200 or not isinstance(body, dict) or body.get("error") != "invalid_grant":
        return [f"the old refresh token was not refused with invalid_grant: {status} {body!r}"]
    return []


# --------------------------------------------------------------------------------------------

def load_xfail() -> set:
    if "INTEROP_XFAIL" in os.environ:
        return {s.strip() for s in os.environ["INTEROP_XFAIL"].split(",") if s.strip()}
    path = HERE / "xfail.txt"
    names = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clients", nargs="*", help=f"subset of {', '.join(CLIENT_CASES)}")
    ap.add_argument("--capture", action="store_true",
                    help="route clients through a recording proxy; print the requests seen")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    clients = args.clients or list(CLIENT_CASES)
    unknown = [c for c in clients if c not in CLIENT_CASES]
    if unknown:
        ap.error(f"unknown clients {unknown}")
    binary = os.environ.get("IMNOTIFY_BIN") or str(HERE.parents[1] / "target/debug/imnotify")
    xfail = load_xfail()
    strict = os.environ.get("INTEROP_STRICT") == "1"

    work = Path(tempfile.mkdtemp(prefix="imnotify-interop-"))
    started = time.time()
    print(f"interop: backend {'PostgreSQL at ' + PG_SERVER if PG_SERVER else 'SQLite'}", flush=True)
    try:
        certs = make_certs(work)
        table = []
        for client in clients:
            t0 = time.time()
            for case, status, detail in run_client(client, binary, certs, work / client,
                                                   args.capture):
                name = f"{client}.{case}"
                if name in xfail:
                    status = {"FAIL": "XFAIL", "PASS": "XPASS"}.get(status, status)
                table.append((name, status, detail))
            print(f"interop: {client} done in {time.time() - t0:.1f}s", flush=True)
            if args.capture:
                print_capture(client, work / client / "wire.jsonl")

        print()
        print("interop summary")
        width = max(len(n) for n, _, _ in table)
        for name, status, detail in table:
            note = detail if status != "PASS" else ""
            if status == "XPASS":
                note = "passes now: remove it from xfail.txt. " + (detail or "")
            print(f"  {status:5}  {name:{width}}  {note}".rstrip())
        counts = {s: sum(1 for _, st, _ in table if st == s)
                  for s in ("PASS", "FAIL", "XFAIL", "XPASS", "SKIP")}
        failed = counts["FAIL"] + (counts["XPASS"] if strict else 0)
        print()
        print(f"interop: {counts['XFAIL']} expected failures (xfail.txt), "
              f"{time.time() - started:.0f}s")
        # Alone on its line, in the form CI reads as a test count.
        print(f"interop: {counts['PASS'] + counts['XPASS']} passed, {failed} failed, "
              f"{counts['SKIP']} skipped")
        if failed:
            print(f"interop: logs kept in {work}")
            args.keep = True
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"interop: work directory {work}")


def print_capture(client: str, path: Path):
    print(f"--- requests sent by {client} ---")
    if not path.exists():
        print("  (none)")
        return
    for line in path.read_text().splitlines():
        e = json.loads(line)
        print(f"  {e['request']}")
        for k, v in e["headers"].items():
            print(f"    {k}: {v}")
        if e["body"]:
            print(f"    body: {e['body'][:600]}")


if __name__ == "__main__":
    sys.exit(main())
