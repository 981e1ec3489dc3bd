"""A real SMTP server for the e-mail tests: aiosmtpd, writing every message it accepts to a
directory as N.eml (the bytes as received, with the envelope in X-Sink-* headers first).

    python smtp_sink.py --port 2525 --dir OUT [--delay 0.2]

Prints "ready PORT" on stdout once it listens. --delay holds each DATA that long before
accepting it, so that a test can kill the sender in the middle of a batch.
"""
import argparse
import asyncio
import itertools
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out, delay):
        self.out = out
        self.delay = delay
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        n = next(self.counter)
        head = "X-Sink-From: %s\r\nX-Sink-To: %s\r\n" % (
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
        )
        tmp = os.path.join(self.out, ".%d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(head.encode())
            f.write(envelope.original_content or envelope.content)
        # Renamed into place only when complete: a reader never sees half a message.
        os.replace(tmp, os.path.join(self.out, "%d-%d.eml" % (int(time.time() * 1000), n)))
        return "250 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    controller = Controller(Sink(a.dir, a.delay), hostname="127.0.0.1", port=a.port)
    controller.start()
    print("ready %d" % a.port, flush=True)
    try:
        # Until the test kills it, or closes our stdin.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
