#!/usr/bin/env bash
# House checks that the compiler and the tests do not make, cheap enough for a git pre-commit
# hook (ln -s ../../scripts/pre-commit.sh .git/hooks/pre-commit) and run by .ci/run and
# scripts/test.sh:
# - no empty file at the root of the repository: a stray `touch` or a shell redirection typo
#   (two such files once came in with a merge). Empty files that belong somewhere live in a
#   directory, with a reason.
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
if [ "$status" = 0 ]; then
  echo "pre-commit: 1 passed, 0 failed"
else
  echo "pre-commit: 0 passed, 1 failed"
fi
exit "$status"
