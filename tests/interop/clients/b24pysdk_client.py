"""b24pysdk (the official Python SDK) against imnotify, through its public API only.

It builds https://{domain}/rest/... URLs itself, so the harness serves real TLS; `requests`
trusts the test CA through REQUESTS_CA_BUNDLE. The domain is "localhost:PORT".

Its typed method `client.im.notify.system.add(attach=...)` accepts only a dict (the full form),
so the short-form ATTACH (a list) goes through the SDK's generic `BitrixToken.call_method`.
"""

from _common import CONFIG, PLAN, case, is_id, report
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
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
    first, second = PLAN["notifications"]
    a = hook.call_method("im.notify.system.add", first)["result"]  # generic call (list ATTACH)
    b = typed_add(client, second).result  # typed call (dict ATTACH)
    report("notify", is_id(a) and is_id(b), f"ids {[a, b]}", ids=[a, b])


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
