#!/usr/bin/env bash
# Installs the SMTP server of the e-mail tests (aiosmtpd, pinned in tests/smtp/requirements.txt)
# into tests/smtp/.deps/venv, only when the pin changed. scripts/test.sh runs it; tests/email.rs
# runs it too, so `cargo nextest run --test email` works on its own. Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")/../tests/smtp" && pwd)
deps="$here/.deps"
mkdir -p "$deps"
exec 9>"$deps/.lock"
flock 9
hash=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -f "$deps/venv.stamp" ] && [ "$(cat "$deps/venv.stamp")" = "$hash" ]; then
  exit 0
fi
echo "smtp: installing aiosmtpd (venv + pip)" >&2
rm -rf "$deps/venv"
python3 -m venv "$deps/venv"
"$deps/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "$hash" >"$deps/venv.stamp"
