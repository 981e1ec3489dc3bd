"""The method page's two curl examples, run exactly as written except for the placeholders:
the address, the webhook's user id and code, and the access token (curl-examples.txt).

curl trusts the test CA through CURL_CA_BUNDLE, set by the harness; the command is unchanged.
"""

import json
import re
import subprocess
from pathlib import Path

from _common import CONFIG, case, is_id, report

HERE = Path(__file__).resolve().parent
text = HERE.joinpath("curl-examples.txt").read_text()
examples = [b.strip() for b in re.split(r"\n\s*\n", text)
            if b.strip() and not b.lstrip().startswith("#")]
assert len(examples) == 2, examples

# If the spec folder sits beside the repo (as in CI), make sure the copy is still verbatim.
spec = HERE.parents[3] / "shared" / "spec" / "im.notify.system.add.txt"
if spec.exists():
    flat = lambda s: re.sub(r"\s+", " ", s)  # noqa: E731
    page = flat(spec.read_text())
    for ex in examples:
        assert flat(ex) in page, "curl-examples.txt no longer matches the method page"


def run(example, substitutions):
    for placeholder, value in substitutions.items():
        assert placeholder in example, placeholder
        example = example.replace(placeholder, value)
    assert "**" not in example, example
    p = subprocess.run(["bash", "-c", example], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"curl exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def payload_of(example):
    body = json.loads(re.search(r"-d '([^']*)'", example).group(1))
    body.pop("auth", None)
    return body


@case("webhook_example")
def webhook_example():
    ex = examples[0]
    answer = run(ex, {"**put_your_bitrix24_address**": CONFIG["host"],
                      "**put_your_user_id_here**": str(CONFIG["webhook"]["user_id"]),
                      "**put_your_webhook_here**": CONFIG["webhook"]["code"]})
    ok = is_id(answer.get("result")) and "time" in answer
    report("webhook_example", ok, "" if ok else f"answer {answer}",
           ids=[answer.get("result")], payload=payload_of(ex))


@case("oauth_example", needs_oauth=True)
def oauth_example():
    ex = examples[1]
    answer = run(ex, {"**put_your_bitrix24_address**": CONFIG["host"],
                      "**put_access_token_here**": CONFIG["oauth"]["access_token"]})
    ok = is_id(answer.get("result")) and "time" in answer
    report("oauth_example", ok, "" if ok else f"answer {answer}",
           ids=[answer.get("result")], payload=payload_of(ex))
