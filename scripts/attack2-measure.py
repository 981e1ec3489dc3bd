#!/usr/bin/env python3
"""The second adversarial pass, measured: page forms, fault specs, the test clock.

    scripts/attack2-measure.py BINARY

BINARY is an imnotify executable. The server runs with the default configuration (limits on)
on 127.0.0.1 with a fresh data directory; attackers connect from 127.0.0.2. For each attack it
prints one Markdown row: the answers, peak RSS (VmHWM growth), the worst /healthz latency of
another client meanwhile, and RSS afterwards. Loopback only; every loop is bounded.
"""
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


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def http(addr, method, path, body=b"", headers=(), src="127.0.0.1", timeout=120):
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
        pass
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
    return (int(m.group(1)) if m else 0), raw.split(b"\r\n\r\n", 1)[-1], time.monotonic() - started


class Server:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="attack2-")
        env = dict(os.environ, IMNOTIFY_LOG__FILTER="warn")
        env.pop("IMNOTIFY_DATA_DIR", None)
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.dir + "/data"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        base = hook = token = None
        for line in self.proc.stdout:
            if line.startswith("imnotify listening on "):
                base = line.split()[-1]
            if line.startswith("Admin token ") and ": " in line:
                token = line.rsplit(": ", 1)[1].strip()
            if line.startswith("Webhook: "):
                hook = line.split()[-1]
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        host, port = base.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.hook = hook.removeprefix(base)
        self.token = token

    def admin(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        return http(self.addr, method, path, data,
                    [("Authorization", f"Bearer {self.token}"), ("Content-Type", "application/json")])

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def during(server, attack):
    pid = server.proc.pid
    idle = vm(pid, "VmRSS")
    hwm0 = vm(pid, "VmHWM")
    stop = threading.Event()
    worst = [0.0]

    def probe():
        while not stop.is_set():
            try:
                _, _, t = http(server.addr, "GET", "/healthz")
            except OSError:
                t = float("inf")
            worst[0] = max(worst[0], t)
            stop.wait(0.25)

    t = threading.Thread(target=probe)
    t.start()
    try:
        out = attack()
    finally:
        stop.set()
        t.join()
    grew = max(0, vm(pid, "VmHWM") - hwm0)
    return out, worst[0], idle, grew, vm(pid, "VmRSS")


def row(name, answer, worst, idle, grew, after):
    print(f"| {name} | {answer} | +{grew / 1024:.0f} MiB (idle {idle / 1024:.0f}) | "
          f"{worst * 1000:.0f} ms | {after / 1024:.0f} MiB |", flush=True)


def forms_attack(server):
    body = b"action=read_all&text=" + b"a" * ((6 << 20) - 21)
    paths = ["/center/action", "/center/lang", "/center/email"]
    out = []

    def one(i):
        out.append(http(server.addr, "POST", paths[i % 3], body,
                        [("Content-Type", "application/x-www-form-urlencoded")], src="127.0.0.2"))

    def go():
        ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    _, worst, idle, grew, after = during(server, go)
    statuses = sorted({st for st, _, _ in out})
    slowest = max(t for _, _, t in out)
    row("16 cookieless 6 MB posts to /center/*", f"{statuses}, slowest {slowest:.2f} s",
        worst, idle, grew, after)


def faults_attack(server):
    method = "m" * 60_000

    def go():
        sts = {}
        for i in range(1000):
            st, _, _ = server.admin("POST", "/admin/api/faults",
                                    {"method": method + str(i), "delay_ms": 1})
            sts[st] = sts.get(st, 0) + 1
        st, body, t = server.admin("GET", "/admin/api/faults")
        return sts, len(body), t
    (sts, size, t), worst, idle, grew, after = during(server, go)
    row("1000 faults with a 60 KB method", f"{sts}; GET faults {size / 1e6:.1f} MB in {t:.2f} s",
        worst, idle, grew, after)
    server.admin("DELETE", "/admin/api/faults")


def clock_attack(server):
    def go():
        for _ in range(40):
            server.admin("POST", "/admin/api/clock", {"advance_seconds": 315360000})
        st, body, _ = server.admin("GET", "/admin/api/clock")
        now = json.loads(body).get("now") if st == 200 else None
        checks = []
        for path in ["/healthz", server.hook + "server.time",
                     server.hook + "im.notify.system.add?USER_ID=1&MESSAGE=hi",
                     server.hook + "im.notify.get"]:
            checks.append(http(server.addr, "GET", path)[0])
        return now, checks
    (now, checks), worst, idle, grew, after = during(server, go)
    row("clock advanced 40 × 10 years", f"now {now}; healthz/time/add/get {checks}",
        worst, idle, grew, after)


def main():
    binary = sys.argv[1]
    print("| attack | answer | peak RSS growth | worst /healthz | RSS after |")
    print("|---|---|---|---|---|")
    for attack in (forms_attack, faults_attack, clock_attack):
        s = Server(binary)
        try:
            attack(s)
        finally:
            s.stop()


if __name__ == "__main__":
    main()
