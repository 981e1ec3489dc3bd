"""fast-bitrix24 against imnotify, through its public API only.

fast-bitrix24 accepts http:// too, but the harness serves every client over TLS; aiohttp trusts
the test CA through SSL_CERT_FILE (its default SSL context uses OpenSSL's default paths).

Two ways of calling matter here:
- `call(method, item, raw=True)` posts one JSON request to {webhook}{method} and returns the
  whole answer. Its aiohttp session raises for HTTP errors, so a refused call surfaces as
  aiohttp.ClientResponseError with the status only: the client never shows the error code.
- `call(method, items)` (the default) always packs items into `batch` commands; errors inside a
  batch surface as the client's ErrorInServerResponseException carrying `result_error`.
"""

import json
import ssl
import urllib.parse
import urllib.request

import aiohttp
from _common import CONFIG, PLAN, case, is_id, report
from fast_bitrix24 import Bitrix
from fast_bitrix24.server_response import ErrorInServerResponseException

hook = Bitrix(CONFIG["webhook"]["url"], verbose=False)


@case("notify")
def notify():
    ids = [hook.call("im.notify.system.add", p, raw=True)["result"]
           for p in PLAN["notifications"]]
    report("notify", all(map(is_id, ids)), f"ids {ids}", ids=ids)


@case("user_id_empty")
def user_id_empty():
    try:
        r = hook.call("im.notify.system.add", PLAN["bad"], raw=True)
        report("user_id_empty", False, f"the call did not fail: {r!r}")
    except aiohttp.ClientResponseError as e:
        # What the client offers for a single call: the HTTP status (400), not the code.
        report("user_id_empty", e.status == 400, f"ClientResponseError status={e.status}")


@case("user_id_empty_batch")
def user_id_empty_batch():
    try:
        r = hook.call("im.notify.system.add", PLAN["bad"])
        report("user_id_empty_batch", False, f"the call did not fail: {r!r}")
    except ErrorInServerResponseException as e:
        # The client's own error type; its argument is the batch's result_error map.
        errors = e.args[0] if e.args else {}
        codes = [v.get("error") for v in errors.values()] if isinstance(errors, dict) else []
        report("user_id_empty_batch", codes == ["USER_ID_EMPTY"],
               f"ErrorInServerResponseException {errors!r}")


@case("batch")
def batch():
    # The client's usual call: a list of items, sent as one `batch` request.
    ids = list(hook.call("im.notify.system.add", PLAN["batch"]))
    report("batch", len(ids) == 2 and all(map(is_id, ids)), f"ids {ids}", ids=ids)


def refresh(refresh_token):
    """The app's own refresh, as fast-bitrix24 leaves it to `token_func`: a refresh_token grant
    against imnotify's /oauth/token/ (the server_endpoint's host)."""
    o = CONFIG["oauth"]
    q = urllib.parse.urlencode({"grant_type": "refresh_token", "client_id": o["client_id"],
                                "client_secret": o["client_secret"],
                                "refresh_token": refresh_token})
    ctx = ssl.create_default_context()  # SSL_CERT_FILE
    with urllib.request.urlopen(f"{CONFIG['base']}/oauth/token/?{q}", context=ctx) as r:
        return json.loads(r.read())


@case("oauth", needs_oauth=True)
def oauth():
    calls = []

    async def token_func():
        # fast-bitrix24 asks again after every 401 and retries without limit: stop it here.
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the server rejected the access token (401)")
        return CONFIG["oauth"]["access_token"]

    b = Bitrix(f"{CONFIG['base']}/rest/", token_func=token_func, verbose=False)
    nid = b.call("im.notify.system.add", PLAN["oauth_notification"], raw=True)["result"]
    report("oauth", is_id(nid), f"id {nid}", ids=[nid])


@case("oauth_refresh", needs_oauth=True)
def oauth_refresh():
    state = {"calls": 0, "refresh_token": CONFIG["oauth"]["refresh_token"]}

    async def token_func():
        # First a token the server does not know; after its 401 the client asks again, and
        # this time the token is refreshed.
        state["calls"] += 1
        if state["calls"] == 1:
            return "revoked-access-token"
        if state["calls"] > 2:  # it would otherwise retry without limit
            raise RuntimeError("the refreshed access token was rejected too")
        answer = refresh(state["refresh_token"])
        state["refresh_token"] = answer["refresh_token"]
        return answer["access_token"]

    b = Bitrix(f"{CONFIG['base']}/rest/", token_func=token_func, verbose=False)
    nid = b.call("im.notify.system.add", PLAN["refresh_notification"], raw=True)["result"]
    report("oauth_refresh", is_id(nid) and state["calls"] == 2,
           f"id {nid}, token_func called {state['calls']} times", ids=[nid],
           new_refresh_token=state["refresh_token"])


def admin(method, path, body=None):
    """A call to imnotify's admin API (the test-server toolkit), with the run's admin token."""
    a = CONFIG["admin"]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{a['url']}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {a['token']}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context()) as r:
        return json.loads(r.read())


@case("fault_retry")
def fault_retry():
    # The server answers the next three adds with QUERY_LIMIT_EXCEEDED (503): fast-bitrix24
    # retries server errors with its own back-off, so the call must end up stored.
    fault = admin("POST", "/faults", {"method": "im.notify.system.add",
                                      "error": "QUERY_LIMIT_EXCEEDED", "times": 3})
    try:
        nid = hook.call("im.notify.system.add", PLAN["fault_notification"], raw=True)["result"]
    finally:
        admin("DELETE", f"/faults/{fault['id']}")
    journal = admin("GET", "/requests?method=im.notify.system.add")["requests"]
    faulted = sum(1 for e in journal if e["fault_id"] == fault["id"]
                  and e["error"] == "QUERY_LIMIT_EXCEEDED" and e["status"] == 503)
    report("fault_retry", is_id(nid), f"id {nid} after {faulted} faulted calls", ids=[nid],
           faulted=faulted)
