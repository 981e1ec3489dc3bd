#!/usr/bin/env bash
# Installs Debian's nginx for the multi-instance test (tests/cluster.rs) when it is missing.
# Needs root for apt; without root and without nginx it says so and fails. The package's own
# service is not used (the tests run nginx as a child with a temp prefix), and Debian's
# policy-rc.d, where present, keeps the installer from starting it.
set -euo pipefail
if [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "nginx: missing, and installing it needs root (apt-get install nginx)" >&2
  exit 1
fi
echo "nginx: installing Debian's nginx" >&2
exec 9>/tmp/imnotify-apt.lock
flock 9
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
