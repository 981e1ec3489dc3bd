# Sourced by scripts/test.sh, scripts/browser-test.sh, bench/run.sh and bench/pg.sh (after they
# `cd` to the repository root): the one copy of "install the Debian packages that are missing".
#
#   install_missing_packages PACKAGE...
#
# Each caller decides what is missing (its own checks: a command, a file, a Python module) and
# passes those package names. No names: nothing happens. As root: `apt-get update`, then
# `apt-get install` of exactly those names; a failed install stops a `set -e` caller, while a
# failed update does not (the install is then skipped, and the caller goes on, as the copies
# this replaces did). Not root: says what is missing on stderr and exits the caller with 1.
install_missing_packages() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ]; then
    if apt-get update -qq; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    fi
  else
    echo "missing packages: $* (run as root to install them)" >&2
    exit 1
  fi
}
