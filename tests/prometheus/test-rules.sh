#!/bin/bash
# The alerting rules pass promtool check rules, and each fires in promtool test rules.
# promtool is a checker, not a peer: no realpeer lock.
set -eu
src=${1:?source dir}
if ! command -v promtool >/dev/null; then
        [ "${CI:-}" = true ] && { echo "promtool missing under CI (tests/setup.sh installs prometheus)"; exit 1; }
        echo "SKIP: promtool not installed (apt-get install prometheus)"; exit 77
fi
promtool check rules "$src/conf/vhost-recon.rules.yml"
cd "$src/tests/prometheus" && promtool test rules rules-test.yml
