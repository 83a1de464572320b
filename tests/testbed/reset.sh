#!/usr/bin/env bash
# Delete every instance in the test-bed projects so a test starts clean.
#   tests/testbed/reset.sh                 projects skein-s1 .. skein-s5
#   tests/testbed/reset.sh skein-s2 ...    only these projects
# Stops (force) and deletes in parallel over the Incus REST API.
set -euo pipefail

SOCK=/var/lib/incus/unix.socket
PROJECTS=("$@")
[ ${#PROJECTS[@]} -gt 0 ] || PROJECTS=(skein-s1 skein-s2 skein-s3 skein-s4 skein-s5)

api() { curl -sS --max-time 120 --unix-socket "$SOCK" -X "$1" ${3:+-H 'Content-Type: application/json' -d "$3"} "http://incus$2"; }
curl -sf --max-time 3 --unix-socket "$SOCK" http://incus/1.0 >/dev/null 2>&1 ||
  { echo "reset: incusd is not serving on $SOCK; run tests/testbed/testbed.sh" >&2; exit 1; }

# fire OPs (one async request per line of "METHOD PATH [JSON]"), then wait for all
run_all() {
  local ops=() m p j r op fail=0
  while read -r m p j; do
    [ -n "$m" ] || continue
    r=$(api "$m" "$p" "$j")
    op=$(jq -r '.operation // empty' <<<"$r")
    if [ -n "$op" ]; then ops+=("$op"); else echo "reset: $m $p: $(jq -r .error <<<"$r")" >&2; fail=1; fi
  done
  for op in "${ops[@]}"; do
    r=$(api GET "$op/wait?timeout=60")
    [ "$(jq -r .metadata.status <<<"$r")" = Success ] ||
      { echo "reset: $(jq -r '.metadata.err // .error' <<<"$r")" >&2; fail=1; }
  done
  return $fail
}

stops='' deletes='' n=0
for p in "${PROJECTS[@]}"; do
  while IFS=$'\t' read -r name status; do
    [ -n "$name" ] || continue
    n=$((n + 1))
    [ "$status" = Stopped ] ||
      stops+="PUT /1.0/instances/$name/state?project=$p {\"action\":\"stop\",\"force\":true}"$'\n'
    deletes+="DELETE /1.0/instances/$name?project=$p"$'\n'
  done < <(api GET "/1.0/instances?project=$p&recursion=1" | jq -r '.metadata[]? | [.name, .status] | @tsv')
done
rc=0
[ -z "$stops" ] || run_all <<<"$stops" || rc=1
[ -z "$deletes" ] || run_all <<<"$deletes" || rc=1
echo "reset: deleted $n instance(s) in ${PROJECTS[*]}"
exit $rc
