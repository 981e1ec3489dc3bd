"""Shared by the Python client scripts: the run's configuration and the case report protocol.

The harness passes a JSON description in $INTEROP_CONFIG. Each script reports one JSON line per
case on stdout: {"case": name, "ok": bool, "detail": str, "ids": [notification ids], ...}.
The harness then checks the database against those ids.
"""

import json
import os
import sys
import traceback

CONFIG = json.loads(os.environ["INTEROP_CONFIG"])
PLAN = CONFIG["plan"]


def report(case, ok, detail="", **extra):
    print(json.dumps({"case": case, "ok": bool(ok), "detail": detail, **extra}), flush=True)


def case(name, needs_oauth=False):
    """Runs the decorated function as one case; an exception fails only that case."""
    def wrap(fn):
        if needs_oauth and not CONFIG.get("oauth"):
            return fn  # the harness reports these as skipped
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure becomes a report
            traceback.print_exc(file=sys.stderr)
            report(name, False, f"{type(e).__name__}: {e}")
        return fn
    return wrap


def is_id(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
