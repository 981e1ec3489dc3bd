"""pybitrix24 against imnotify, through its public API, except for seeding stored tokens.

pybitrix24 builds https://{hostname}/... URLs itself, so the harness serves real TLS; urllib
trusts the test CA through SSL_CERT_FILE. The hostname is "localhost:PORT".

It does not raise for API errors: an HTTP error's JSON body is returned like a success, and the
client's own way to see the error is `get_error_if_present(answer)`.

pybitrix24 gets tokens only through the authorization-code grant (`obtain_tokens(code)`) or a
refresh (`refresh_tokens()`), and has no public setter for a stored token. The OAuth cases seed
the token that `imnotify app token` printed into its `_access_token`/`_refresh_token`, as an
app that resumes a stored session does; the token server is chosen with its `auth_hostname`
setting (meant for on-premise portals), which points refresh at imnotify.
"""

import json

from _common import CONFIG, PLAN, case, is_id, report
from pybitrix24 import Bitrix24, get_error_if_present

CODE = CONFIG["webhook"]["code"]
bx24 = Bitrix24(CONFIG["host"], user_id=CONFIG["webhook"]["user_id"])


@case("notify")
def notify():
    answers = [bx24.call_webhook(CODE, "im.notify.system.add", p) for p in PLAN["notifications"]]
    # get_error_if_present() raises PBx24ArgumentError for a success whose result is not a dict
    # (an id here), so success answers are read directly.
    errors = [a.get("error") for a in answers]
    ids = [a.get("result") for a in answers]
    report("notify", all(map(is_id, ids)) and not any(errors), f"ids {ids} errors {errors}",
           ids=ids)


@case("user_id_empty")
def user_id_empty():
    answer = bx24.call_webhook(CODE, "im.notify.system.add", PLAN["bad"])
    error = get_error_if_present(answer)
    report("user_id_empty", error == "USER_ID_EMPTY", f"get_error_if_present: {error!r}")


@case("batch")
def batch():
    # pybitrix24 form-encodes batch commands with a flattener that does not descend into lists
    # (ATTACH[BLOCKS][] would carry a Python repr), so ATTACH goes as a JSON string, which the
    # method accepts too.
    calls = {f"n{i}": ("im.notify.system.add", dict(p, ATTACH=json.dumps(p["ATTACH"])))
             for i, p in enumerate(PLAN["batch"])}
    answer = bx24.call_batch_webhook(CODE, calls, halt_on_error=True)
    error = get_error_if_present(answer)
    result = (answer.get("result") or {}).get("result") or {}
    ids = [result.get(k) for k in calls] if isinstance(result, dict) else list(result)
    report("batch", all(map(is_id, ids)) and not error and len(ids) == 2,
           f"ids {ids} error {error!r} answer {str(answer)[:300]}", ids=ids)


def oauth_client():
    o = CONFIG["oauth"]
    # auth_hostname: where pybitrix24 sends /oauth/token/ (default: the portal itself).
    b = Bitrix24(CONFIG["host"], o["client_id"], o["client_secret"], auth_hostname=CONFIG["host"])
    b._access_token = o["access_token"]  # seeding a stored session: no public setter exists
    b._refresh_token = o["refresh_token"]
    return b


@case("oauth", needs_oauth=True)
def oauth():
    answer = oauth_client().call("im.notify.system.add", PLAN["oauth_notification"])
    error = answer.get("error")
    nid = answer.get("result")
    report("oauth", is_id(nid) and not error, f"id {nid} error {error!r}", ids=[nid])


@case("oauth_refresh", needs_oauth=True)
def oauth_refresh():
    b = oauth_client()
    tokens = b.refresh_tokens()  # GET https://{auth_hostname}/oauth/token/?grant_type=...
    if tokens.get("error") or not tokens.get("access_token"):
        report("oauth_refresh", False, f"refresh answered {tokens!r}")
        return
    answer = b.call("im.notify.system.add", PLAN["refresh_notification"])
    nid = answer.get("result")
    report("oauth_refresh", is_id(nid) and tokens["access_token"] != CONFIG["oauth"]["access_token"],
           f"id {nid} error {answer.get('error')!r}", ids=[nid],
           new_refresh_token=tokens.get("refresh_token"))
