#!/usr/bin/env python3
"""Writes the fuzz seed corpora (fuzz/seeds/<target>/) from the spec's examples.

Usage: python3 fuzz/make_seeds.py [SPEC_DIR]   (default: ../shared/spec beside the repo)

Sources: every `curl -d '...'` body and every inline `...` snippet of the spec that is JSON or a
PHP bracket form, plus ATTACH examples built from the block grammar of bitrix24-rest.md §2.6.
The seeds are committed, so fuzzing does not need the spec; rerun this when the spec grows.
"""

import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "spec")

# Block shapes of §2.6.3, one of each, in both short and full form below.
ATTACH_BLOCKS = [
    {"MESSAGE": "API [B]bold[/B] #BR# [URL=https://example.com]link[/URL]"},
    {"MESSAGE": {"TEXT": "as description", "AS_DESCRIPTION": "Y"}},
    {"USER": {"NAME": "John\nDoe", "AVATAR": "https://example.com/a.png", "USER_ID": 1}},
    {"USER": [{"NAME": "Net", "NETWORK_ID": "n42"}, {"NAME": "Bot", "BOT_ID": 3, "AVATAR_TYPE": "BOT"}]},
    {"LINK": {"NAME": "Ticket", "LINK": "https://example.com/t/1", "DESC": "d", "PREVIEW": "/p.png", "WIDTH": 10, "HEIGHT": 20}},
    {"RICH_LINK": {"NAME": "r", "LINK": "http://e.com", "PREVIEW": "/x", "PREVIEW_SIZE": {"HEIGHT": 1, "WIDTH": 2}}},
    {"GRID": [{"NAME": "Status", "VALUE": "Open#BR#now", "DISPLAY": "LINE", "WIDTH": 100, "COLOR": "#ff0000"},
              {"NAME": "k", "VALUE": "v", "DISPLAY": "COLUMN", "USER_ID": 1, "LINK": "/u/1"},
              {"DISPLAY": "CARD"}]},
    {"IMAGE": [{"LINK": "https://example.com/i.jpg", "NAME": "i", "PREVIEW": "/pv", "WIDTH": 1, "HEIGHT": 1}]},
    {"FILE": {"LINK": "/f.pdf", "NAME": "f.pdf", "SIZE": 1024}},
    {"DELIMITER": {"SIZE": 200, "COLOR": "#c6c6c6"}},
    {"DELIMITER": {}},
    {"HTML": "<b>no</b>"},
    {"message": "lower-case key is not a block"},
]


def spec_snippets():
    bodies, inline = [], []
    for name in sorted(os.listdir(SPEC)):
        if not name.endswith((".md", ".txt")):
            continue
        text = open(os.path.join(SPEC, name), encoding="utf-8").read()
        bodies += re.findall(r"-d '([^']*)'", text)
        inline += re.findall(r"`([^`\n]+)`", text)
    return bodies, inline


def main():
    bodies, inline = spec_snippets()
    json_snippets = []
    form_snippets = []
    for s in bodies + inline:
        try:
            json.loads(s)
            json_snippets.append(s)
        except ValueError:
            if "=" in s and " " not in s.strip():
                form_snippets.append(s.replace("…", "x"))
    attach_values = [json.dumps([b]) for b in ATTACH_BLOCKS]
    attach_values.append(json.dumps(ATTACH_BLOCKS[:3]))
    attach_values.append(json.dumps({"ID": 1, "COLOR": "#abc", "DESCRIPTION": "d", "BLOCKS": ATTACH_BLOCKS}))
    attach_values.append(json.dumps({"COLOR": "TRANSPARENT", "BLOCKS": [ATTACH_BLOCKS[0]]}))
    attach_values.append(json.dumps({"COLOR": "red", "BLOCKS": {"0": ATTACH_BLOCKS[0]}}))
    attach_forms = [
        "ATTACH[0][MESSAGE]=x",
        "ATTACH[BLOCKS][0][MESSAGE]=x&ATTACH[COLOR]=%23ff0000",
        "ATTACH[BLOCKS][0][GRID][0][NAME]=a&ATTACH[BLOCKS][0][GRID][0][VALUE]=b",
        "ATTACH[0][USER][NAME]=n&ATTACH[0][USER][USER_ID]=2",
    ]
    notify_bodies = json_snippets + [
        json.dumps({"USER_ID": 1, "MESSAGE": "m", "CLIENT_ID": "c", "TAG": "T", "ATTACH": json.loads(a)})
        for a in attach_values[:4]
    ]

    seeds = {
        "params_query": [s.encode() for s in form_snippets + attach_forms],
        # selector byte: 0 urlencoded, 1 multipart (boundary XyZ), 2 JSON.
        "params_request": (
            [b"\x02\n" + s.encode() for s in notify_bodies]
            + [b"\x00auth=x&USER_ID=1\n" + s.encode() for s in form_snippets + attach_forms]
            + [
                b"\x01a=1\n--XyZ\r\nContent-Disposition: form-data; name=\"ATTACH[0][MESSAGE]\"\r\n\r\n"
                b"hi\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
                b"Content-Type: text/plain\r\n\r\nbody\r\n--XyZ--\r\n"
            ]
        ),
        # selector byte: 0 JSON value, 1 bracket form, 2 raw string.
        "attach": (
            [b"\x00" + a.encode() for a in attach_values]
            + [b"\x01" + f.encode() for f in attach_forms]
            + [b"\x02" + a.encode() for a in attach_values]
        ),
        # path ? query, as the REST handler sees them (P1, §1.1, §1.7).
        "route": [
            p.encode()
            for p in [
                "/im.notify.system.add",
                "/5/k2q8w0d7r1m5x9zt/im.notify.system.add.json?auth=x",
                "/1/code/IM.NOTIFY.xml",
                "//im.notify/?access_token=t&sessid=s",
                "/api/x/y",
                "/1/c/m.json.xml?aplogin=1&ap=c&auth[]=1",
                "/.json",
            ]
        ],
        # selector byte: even = text normalisation, odd = value serialisers.
        "text_and_json": (
            [b"\x00" + t.encode() for t in ["a#BR#b[BR]c[br]d", "  \x00 x \n", "é" * 30]]
            + [b"\x01" + s.encode() for s in notify_bodies + attach_values]
            + [b"\x01" + s.encode() for s in ['{"0":1,"1":2}', "[1.5e300,-0.0,1e-7]", '"\\u2028</x>"']]
        ),
    }
    for target, items in seeds.items():
        d = os.path.join(HERE, "seeds", target)
        os.makedirs(d, exist_ok=True)
        for item in items:
            name = hashlib.sha1(item).hexdigest()[:16]
            with open(os.path.join(d, name), "wb") as f:
                f.write(item)
        print("%s: %d seeds" % (target, len(set(items))))


if __name__ == "__main__":
    main()
