#!/bin/bash
# A real Prometheus 2.42 (private directory, own ports, scrape interval 1 s) scrapes
# vhost-recond's /metrics and, in a second job, node_exporter's textfile collector fed by
# `vhostctl metrics FILE`. DPDK testpmd runs on both sides; the switch is killed with
# SIGKILL and started again twice. From Prometheus' HTTP API: the outage histogram's count
# rose by 2 and its sum lies within the outages this test measured itself, the loss
# counter says why, and the link is up, in both jobs; `promtool check metrics` on the
# scraped text reports nothing.
# Takes /tmp/vhost-recon-realpeer.lock for the run (REALPEER_LOCK_HELD=1: the caller has it).
set -u
BUILD=${1:?usage: $0 BUILD_DIR}
DAEMON=$BUILD/daemon/vhost-recond
VHOSTCTL=$BUILD/daemon/vhostctl
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../real/dpdk-lib.sh"

skip() {
    if [ "${CI:-}" = true ]; then echo "FAIL (CI=true, no skip): $*"; exit 1; fi
    echo "SKIP: $*"; exit $SKIP
}
for p in prometheus promtool prometheus-node-exporter dpdk-testpmd curl python3; do
    command -v $p >/dev/null || skip "$p not installed (tests/setup.sh installs it)"
done
why=$(dpdk_setup_hugepages) || skip "no hugepages: $why"

if [ "${REALPEER_LOCK_HELD:-}" != 1 ]; then
    exec 9>>/tmp/vhost-recon-realpeer.lock
    flock -w 900 9 || { echo "FAIL: the realpeer lock was not free within 900 s"; exit 1; }
fi

WORK=$(mktemp -d /tmp/vr-prom-XXXXXX)
PROM_PID= NODE_PID= FEED_PID=
cleanup() {
    local pid
    for pid in $FEED_PID $PROM_PID $NODE_PID; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
    dpdk_cleanup
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -25 "$f"; done; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT=$(free_port); PPORT=$(free_port); NPORT=$(free_port)
now() { date +%s.%N; }

dpdk_write_config
sed -i "1i metrics = \"127.0.0.1:$MPORT\";" "$WORK/vhost-recon.conf"
mkdir -p "$WORK/textfile" "$WORK/tsdb"
cat > "$WORK/prometheus.yml" <<CONF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: vhost-recon
    static_configs: [ { targets: [ "127.0.0.1:$MPORT" ] } ]
  - job_name: node
    static_configs: [ { targets: [ "127.0.0.1:$NPORT" ] } ]
CONF
promtool check config "$WORK/prometheus.yml" > /dev/null || fail "promtool check config"

dpdk_start_daemon || fail "daemon did not start"
# the textfile feed, as vhost-recon-metrics.timer does (every second here, not 15 s)
( while :; do "$VHOSTCTL" --socket "$WORK/control" metrics "$WORK/textfile/vhost-recon.prom"; sleep 1; done ) &
FEED_PID=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$NPORT" --collector.disable-defaults \
    --collector.textfile --collector.textfile.directory="$WORK/textfile" > "$WORK/node.log" 2>&1 &
NODE_PID=$!
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PPORT" > "$WORK/prometheus.log" 2>&1 &
PROM_PID=$!

# query EXPR: the value of the first result, or "none"
query() {
    curl -s --max-time 5 "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "none")
except Exception:
    print("none")'
}
# wait_query EXPR VALUE SECS: until EXPR is VALUE
wait_query() {
    local i
    for i in $(seq $(($3 * 5))); do
        [ "$(query "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    return 1
}
link_up() { "$VHOSTCTL" --socket "$WORK/control" --json list | grep -q '"link":"up"\|"link": "up"'; }

dpdk_start_backend 0
dpdk_start_frontend
dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || fail "no traffic through vhost-recond"
for job in vhost-recon node; do
    wait_query "vhost_recon_port_link_up{job=\"$job\",port=\"port0\"}" 1 30 ||
        fail "Prometheus (job $job) does not see port0 up: $(query "vhost_recon_port_link_up{job=\"$job\"}")"
done
count0=$(query 'vhost_recon_port_outage_seconds_count{job="vhost-recon",port="port0"}')
closed0=$(query 'vhost_recon_port_backend_losses_total{job="vhost-recon",port="port0",reason="closed"}')
echo "Prometheus sees port0 up in both jobs; outage count $count0, losses (closed) $closed0"

lo=0 hi=0
for round in 1 2; do
    t_before=$(now)
    kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
    t_after=$(now)
    sleep 1
    t_start=$(now)
    dpdk_start_backend "$round"
    for _ in $(seq 1500); do link_up && break; sleep 0.02; done
    t_up=$(now)
    link_up || fail "round $round: the link did not come up again"
    # the outage (back-end lost -> link up) lies between these two
    lo=$(python3 -c "print($lo + $t_start - $t_after)")
    hi=$(python3 -c "print($hi + $t_up - $t_before)")
    echo "round $round: outage between $(python3 -c "print(round($t_start - $t_after, 3))") and $(python3 -c "print(round($t_up - $t_before, 3))") s"
    dpdk_wait_rx_above "$WORK/backend.$round.log" 1000 20 || fail "round $round: no traffic through the new switch"
done

want=$(python3 -c "print(int(float('$count0')) + 2)")
for job in vhost-recon node; do
    wait_query "vhost_recon_port_outage_seconds_count{job=\"$job\",port=\"port0\"}" "$want" 20 ||
        fail "job $job: outage count $(query "vhost_recon_port_outage_seconds_count{job=\"$job\",port=\"port0\"}"), expected $want"
    sum=$(query "vhost_recon_port_outage_seconds_sum{job=\"$job\",port=\"port0\"}")
    python3 -c "import sys; sys.exit(not ($lo <= float('$sum') <= $hi))" ||
        fail "job $job: outage sum $sum s is not within the measured [$lo, $hi] s"
    closed=$(query "vhost_recon_port_backend_losses_total{job=\"$job\",port=\"port0\",reason=\"closed\"}")
    [ "$(python3 -c "print(int(float('$closed')) - int(float('$closed0')))")" = 2 ] ||
        fail "job $job: back-end losses with reason closed: $closed0 -> $closed, expected +2"
    wait_query "vhost_recon_port_link_up{job=\"$job\",port=\"port0\"}" 1 10 || fail "job $job: link not up"
    echo "job $job: outage count $count0 -> $want, sum $sum s within [$(python3 -c "print(round($lo,3))"), $(python3 -c "print(round($hi,3))")] s, losses reason=closed +2, link up"
done
[ "$(query 'up{job="vhost-recon"}')" = 1 ] || fail "Prometheus' up for the daemon is not 1"
[ "$(query 'node_textfile_scrape_error{job="node"}')" = 0 ] || fail "node_exporter's textfile collector reports an error"
echo "Prometheus scraped $(query 'scrape_samples_scraped{job="vhost-recon"}') samples a scrape from vhost-recond"

curl -s --max-time 5 "http://127.0.0.1:$MPORT/metrics" > "$WORK/scrape.txt" || fail "GET /metrics"
out=$(promtool check metrics < "$WORK/scrape.txt" 2>&1); rc=$?
[ "$rc" = 0 ] && [ -z "$out" ] || fail "promtool check metrics (rc $rc): $out"
echo "promtool check metrics on the scrape ($(wc -c < "$WORK/scrape.txt") bytes): nothing to report"
grep -E '^vhost_recon_port_(outage_seconds_(count|sum)|backend_losses_total\{port="port0",reason="closed"\}|link_up)' "$WORK/scrape.txt" | sed 's/^/scrape: /'
echo "PASS: Prometheus saw 2 outages of port0 (count, sum within the measured bounds, reason closed, link up) from /metrics and from the textfile collector"
