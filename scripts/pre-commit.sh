#!/usr/bin/env bash
# House checks that the compiler and the tests do not make, cheap enough for a git pre-commit
# hook (ln -s ../../scripts/pre-commit.sh .git/hooks/pre-commit) and run by .ci/run and
# scripts/test.sh:
# - no empty file at the root of the repository: a stray `touch` or a shell redirection typo
#   (two such files once came in with a merge). Empty files that belong somewhere live in a
#   directory, with a reason.
# - every crate under crates/ is a member of the workspace, so fmt, clippy, the build and the
#   tests (all run with --workspace) cover it.
# It reads the index, so it checks what is about to be committed, staged or not yet pushed.
set -euo pipefail
cd "$(dirname "$0")/.."

empty_blob=$(git hash-object -t blob /dev/null)
status=0
while read -r mode object _stage path; do
  case "$path" in */*) continue ;; esac
  if [ "$object" = "$empty_blob" ]; then
    echo "pre-commit: $path is an empty file at the repository root; remove it (git rm $path)" >&2
    status=1
  fi
done < <(git ls-files --stage)
passed=0
failed=0
if [ "$status" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

members_ok=0
while read -r manifest; do
  crate=${manifest%/Cargo.toml}
  if ! grep -Eq "^members = .*\"$crate\"" Cargo.toml; then
    echo "pre-commit: $crate is not in the workspace members of Cargo.toml" >&2
    members_ok=1
  fi
done < <(git ls-files 'crates/*/Cargo.toml')
if [ "$members_ok" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "pre-commit: $passed passed, $failed failed"
[ "$failed" = 0 ]
