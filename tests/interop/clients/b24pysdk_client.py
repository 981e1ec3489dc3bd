"""b24pysdk (the official Python SDK) against imnotify, through its public API only.

It builds https://{domain}/rest/... URLs itself, so the harness serves real TLS; `requests`
trusts the test CA through REQUESTS_CA_BUNDLE. The domain is "localhost:PORT".

Token refresh: the SDK sends it to a fixed authorisation server (a class constant of its
BitrixOAuthRequester); there is no setting for it. Its documented extension point is the app
class: a subclass of AbstractBitrixApp whose refresh_oauth_token() asks imnotify's /oauth/token/
and hands the answer to the SDK's own RenewedOAuth.from_dict(), which validates every field of
the answer (member_id, endpoints, domain, tokens, expires, expires_in, user_id, scope, status).

Its typed method `client.im.notify.system.add(attach=...)` accepts only a dict (the full form),
so the short-form ATTACH (a list) goes through the SDK's generic `BitrixToken.call_method`.
"""

import json
import ssl
import urllib.request
from datetime import datetime, timedelta, timezone

import requests
from _common import CONFIG, PLAN, case, is_id, report
from b24pysdk import AbstractBitrixApp, BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.credentials.auth import RenewedOAuth
from b24pysdk.errors import BitrixAPIBadRequest

hook = BitrixWebhook(domain=CONFIG["host"],
                     webhook_token=f"{CONFIG['webhook']['user_id']}/{CONFIG['webhook']['code']}")
client = Client(hook)


def typed_add(c, p):
    """The SDK's typed method; keyword names are the SDK's own."""
    kw = {k: p[K] for k, K in (("message_out", "MESSAGE_OUT"), ("tag", "TAG"),
                               ("sub_tag", "SUB_TAG"), ("attach", "ATTACH"),
                               ("client_id", "CLIENT_ID")) if K in p}
    return c.im.notify.system.add(p.get("USER_ID", 0), p["MESSAGE"], **kw)


@case("notify")
def notify():
    ids, times = [], []
    for p in PLAN["notifications"]:
        if isinstance(p["ATTACH"], dict):  # the typed method (full-form ATTACH)
            req = typed_add(client, p)
            ids.append(req.result)
            times.append(req.time)  # the SDK's parse of the answer's `time` block
        else:  # the generic call (short-form ATTACH, a list)
            ids.append(hook.call_method("im.notify.system.add", p)["result"])
    t = times[0]
    time_ok = (isinstance(t.date_start, datetime) and isinstance(t.operating_reset_at, datetime)
               and t.operating is not None and t.finish >= t.start)
    report("notify", all(map(is_id, ids)) and time_ok, f"ids {ids}, time {t}", ids=ids)


@case("user_id_empty")
def user_id_empty():
    try:
        r = typed_add(client, PLAN["bad"]).result  # USER_ID 0: the typed method needs an int
        report("user_id_empty", False, f"the call did not fail: {r!r}")
    except BitrixAPIBadRequest as e:
        # The SDK's own error API: a BitrixAPIBadRequest whose .error is the server's code.
        ok = e.error == "USER_ID_EMPTY" and e.status_code == 400
        report("user_id_empty", ok, f"{type(e).__name__} error={e.error!r} "
                                    f"status={e.status_code}: {e.error_description}")


@case("batch")
def batch():
    requests_ = [typed_add(client, p) for p in PLAN["batch"]]
    res = client.call_batch(requests_, halt=True).result
    ids = list(res.result) if isinstance(res.result, list) else list(res.result.values())
    report("batch", all(map(is_id, ids)) and not res.result_error, f"ids {ids}", ids=ids)


@case("oauth", needs_oauth=True)
def oauth():
    o = CONFIG["oauth"]
    token = BitrixToken(domain=CONFIG["host"], auth_token=o["access_token"],
                        refresh_token=o["refresh_token"],
                        bitrix_app=BitrixApp(client_id=o["client_id"],
                                             client_secret=o["client_secret"]))
    nid = typed_add(Client(token), PLAN["oauth_notification"]).result
    report("oauth", is_id(nid), f"id {nid}", ids=[nid])


class ImnotifyApp(AbstractBitrixApp):
    """An app whose tokens are refreshed by imnotify instead of Bitrix24's central server."""

    def __init__(self, client_id, client_secret, token_url):
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_url = token_url
        self.answers = []

    def refresh_oauth_token(self, refresh_token, **kwargs):
        r = requests.get(self.token_url, params={
            "grant_type": "refresh_token", "client_id": self.client_id,
            "client_secret": self.client_secret, "refresh_token": refresh_token}, timeout=10)
        r.raise_for_status()
        self.answers.append(r.json())
        return RenewedOAuth.from_dict(r.json())  # the SDK's own validation of the answer


@case("oauth_refresh", needs_oauth=True)
def oauth_refresh():
    o = CONFIG["oauth"]
    app = ImnotifyApp(o["client_id"], o["client_secret"], f"{CONFIG['base']}/oauth/token/")
    # A token whose expiry has passed: the SDK refreshes it before the call.
    token = BitrixToken(domain=CONFIG["host"], auth_token=o["access_token"],
                        refresh_token=o["refresh_token"],
                        expires=datetime.now(timezone.utc) - timedelta(minutes=1),
                        expires_in=3600, bitrix_app=app)
    nid = typed_add(Client(token), PLAN["refresh_notification"]).result
    refreshed = len(app.answers) == 1 and token.refresh_token != o["refresh_token"]
    report("oauth_refresh", is_id(nid) and refreshed,
           f"id {nid}, refreshes {len(app.answers)}", ids=[nid],
           new_refresh_token=token.refresh_token)


def admin(method, path, body=None):
    """A call to imnotify's admin API (the test-server toolkit), with the run's admin token."""
    a = CONFIG["admin"]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{a['url']}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {a['token']}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context()) as r:
        return json.loads(r.read())


@case("fault_refresh", needs_oauth=True)
def fault_refresh():
    # A valid token, but the server answers the next add of this app with expired_token: the
    # SDK must refresh through the app and send the call again.
    o = CONFIG["oauth"]
    spare = o["spare"]
    app = ImnotifyApp(o["client_id"], o["client_secret"], f"{CONFIG['base']}/oauth/token/")
    token = BitrixToken(domain=CONFIG["host"], auth_token=spare["access_token"],
                        refresh_token=spare["refresh_token"],
                        expires=datetime.now(timezone.utc) + timedelta(minutes=50),
                        expires_in=3600, bitrix_app=app)
    fault = admin("POST", "/faults", {"method": "im.notify.system.add", "error": "expired_token",
                                      "times": 1, "client_id": o["client_id"]})
    try:
        nid = typed_add(Client(token), PLAN["fault_refresh_notification"]).result
    finally:
        admin("DELETE", f"/faults/{fault['id']}")
    journal = admin("GET", "/requests?method=im.notify.system.add")["requests"]
    faulted = sum(1 for e in journal if e["fault_id"] == fault["id"]
                  and e["error"] == "expired_token" and e["status"] == 401)
    report("fault_refresh", is_id(nid) and len(app.answers) == 1,
           f"id {nid}, {faulted} faulted, {len(app.answers)} refreshes", ids=[nid],
           faulted=faulted, refreshes=len(app.answers))
