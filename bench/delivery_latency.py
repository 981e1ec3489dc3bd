#!/usr/bin/env python3
"""Delivery measurements for issue 12, standard library only.

    python3 bench/delivery_latency.py [--adds 2000] [--subscribers 100] [--rounds 100]

1. Latency: 100 times, one im.notify.system.add through a webhook while one SSE stream of the
   recipient is open; the time from the REST answer (the response fully read) to the matching
   `notifyAdd` frame on the stream. The writer publishes before it answers, so the event can
   arrive first: such a sample counts as 0. Also reported: from sending the request to the event.
2. Throughput: `--adds` adds from 8 client threads with no stream open, then with
   `--subscribers` streams of the same recipient open and read by a separate process (so every
   add fans out to all of them: the worst case). Reported as the ratio with/without.

The server is $IMNOTIFY_BIN, else target/release/imnotify, else target/debug/imnotify, started
on a free port with a temporary data directory and --no-limits.
"""
import argparse
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    if os.environ.get("IMNOTIFY_BIN"):
        return os.environ["IMNOTIFY_BIN"]
    for profile in ("release", "debug"):
        p = os.path.join(ROOT, "target", profile, "imnotify")
        if os.path.exists(p):
            return p
    sys.exit("build imnotify first (cargo build --release)")


def start_server(data_dir, env_extra):
    env = dict(os.environ, IMNOTIFY_LOG__FILTER="warn", **env_extra)
    p = subprocess.Popen(
        [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--no-limits"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    base = hook = None
    for line in p.stdout:
        if line.startswith("imnotify listening on "):
            base = line.split()[-1]
        if line.startswith("Webhook: "):
            hook = line.split()[-1][len(base):]
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    host, port = base[len("http://"):].split(":")
    return p, (host, int(port)), hook


def post(conn_addr, path, body, sock=None):
    """One keep-alive POST on `sock` (opened if None); returns (status, json, sock)."""
    if sock is None:
        sock = socket.create_connection(conn_addr)
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (path.encode(), len(data)) + data
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), json.loads(rest[:length]), sock


def open_stream(addr, hook):
    s = socket.create_connection(addr)
    s.sendall(b"GET %sevents HTTP/1.0\r\nHost: x\r\n\r\n" % hook.encode())
    return s


def latency(addr, hook, rounds):
    stream = open_stream(addr, hook)
    arrived = {}
    ready = threading.Event()

    def reader():
        buf = b""
        ready.set()
        while True:
            try:
                chunk = stream.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.perf_counter()
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        arrived[json.loads(line[5:])["id"]] = now

    threading.Thread(target=reader, daemon=True).start()
    ready.wait()
    time.sleep(0.3)
    sock = None
    after_answer, after_send = [], []
    for i in range(rounds):
        sent = time.perf_counter()
        status, body, sock = post(addr, hook + "im.notify.system.add", {"USER_ID": 1, "MESSAGE": "latency %d" % i}, sock)
        answered = time.perf_counter()
        nid = body["result"]
        deadline = time.time() + 5
        while nid not in arrived:
            if time.time() > deadline:
                sys.exit("event %s never arrived" % nid)
            time.sleep(0.0002)
        after_answer.append(max(0.0, arrived[nid] - answered))
        after_send.append(arrived[nid] - sent)
        time.sleep(0.01)
    stream.close()
    return after_answer, after_send


def load(addr, hook, adds, threads=8):
    per = adds // threads
    errors = []

    def worker():
        sock = None
        for i in range(per):
            status, _, sock = post(addr, hook + "im.notify.system.add", {"USER_ID": 1, "MESSAGE": "load %d" % i}, sock)
            if status != 200:
                errors.append(status)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        sys.exit("%d adds failed" % len(errors))
    return per * threads / elapsed


def readers(addr, hook, n, opened, stop):
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = open_stream(addr, hook)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    opened.set()
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            try:
                if not key.fileobj.recv(1 << 20):
                    sel.unregister(key.fileobj)
            except BlockingIOError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adds", type=int, default=2000)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=100)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr, hook = start_server(
            os.path.join(tmp, "data"),
            {"IMNOTIFY_EVENTS__MAX_STREAMS_PER_USER": str(a.subscribers + 10)},
        )
        try:
            print("server: %s" % binary())
            after_answer, after_send = latency(addr, hook, a.rounds)
            ms = lambda xs: "median %.2f ms, worst %.2f ms" % (statistics.median(xs) * 1e3, max(xs) * 1e3)
            print("REST answer -> SSE event (%d): %s" % (a.rounds, ms(after_answer)))
            print("REST request sent -> SSE event (%d): %s" % (a.rounds, ms(after_send)))
            load(addr, hook, 200)  # warm-up
            alone = load(addr, hook, a.adds)
            opened, stop = multiprocessing.Event(), multiprocessing.Event()
            r = multiprocessing.Process(target=readers, args=(addr, hook, a.subscribers, opened, stop))
            r.start()
            opened.wait()
            time.sleep(0.5)
            with_subs = load(addr, hook, a.adds)
            stop.set()
            r.join()
            print("adds/s with no stream: %.0f" % alone)
            print("adds/s with %d streams of the recipient: %.0f (ratio %.2f)" % (a.subscribers, with_subs, with_subs / alone))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
