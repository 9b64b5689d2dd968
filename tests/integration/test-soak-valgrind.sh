#!/bin/bash
# The soak (10 000 back-end reconnect cycles) with the daemon under valgrind memcheck: no
# error, no leak (valgrind's exit code 99 fails daemon_stop in test-soak), same fds.
# Usage: test-soak-valgrind.sh TEST_SOAK VHOST_RECOND
set -euo pipefail
soak=$1 daemon=$2
if ! command -v valgrind >/dev/null; then
        echo "SKIP: valgrind is not installed (apt-get install valgrind)"
        exit 77
fi
log=$(mktemp /tmp/vr-valgrind-XXXXXX.log)
trap 'rm -f "$log"' EXIT
export VALGRIND_LOG=$log VALGRIND_DAEMON=$daemon SOAK_UNDER_VALGRIND=1
export VHOST_RECOND=$(dirname "$(readlink -f "$0")")/valgrind-recond.sh
status=0
"$soak" || status=$?
echo "valgrind (the daemon's whole run):"
grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|in use at exit|total heap usage" "$log" | sed 's/^==[0-9]*== /  /'
if [ "$status" -ne 0 ]; then
        echo "test-soak failed under valgrind (exit $status); the valgrind log:"
        cat "$log"
        exit 1
fi
grep -q "ERROR SUMMARY: 0 errors" "$log"
