#!/usr/bin/env bash
# Records a terminal session: two worker "hosts", each in a network namespace of its own with
# its own link to the PostgreSQL server on this machine, run one DAG with `abathur worker`.
# Commands are printed as `$ ...`, followed by their output.
#
#   sudo tests/netns/session.sh [PATH_OF_ABATHUR] > session.txt
#
# Needs root, iproute2, socat (the server listens on 127.0.0.1 only, so socat forwards each
# host's link to it, as tests/netns does with a forwarder of its own), createdb and dropdb,
# and the server at 127.0.0.1:5432 with trust auth for user postgres. Everything it makes
# (namespaces host-a and host-b, links, database swarm_demo, a temporary folder) is removed
# on the way out.
set -euo pipefail

binary=$(realpath "${1:-target/debug/abathur}")
work=$(mktemp -d)
mkdir "$work/bin"
ln -s "$binary" "$work/bin/abathur"
export PATH="$work/bin:$PATH"
unset ABATHUR_DB RUST_LOG
db=swarm_demo
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip link del veth-a 2>/dev/null || true
    ip link del veth-b 2>/dev/null || true
    ip netns del host-a 2>/dev/null || true
    ip netns del host-b 2>/dev/null || true
    dropdb -h 127.0.0.1 -U postgres --if-exists "$db" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cleanup_before() {
    ip link del veth-a 2>/dev/null || true
    ip link del veth-b 2>/dev/null || true
    ip netns del host-a 2>/dev/null || true
    ip netns del host-b 2>/dev/null || true
    dropdb -h 127.0.0.1 -U postgres --if-exists "$db" 2>/dev/null || true
}
cleanup_before
cd "$work"

# Prints a command as typed, then runs it.
show() {
    printf '$ %s\n' "$*"
    eval "$@" 2>&1
}
# A comment in the transcript.
say() {
    printf '\n# %s\n' "$*"
}

cat >step.sh <<'EOF'
#!/bin/sh
# One step of the pipeline: the task arrives as JSON on stdin; work a moment, then say which
# step ran where (the address of the namespace's card) as the task's result.
step=$(sed -n 's/.*"summary":"\([^"]*\)".*/\1/p')
sleep 0.4
echo "{\"step\": \"$step\", \"ran_on\": \"$(ip -4 -o addr show eth0 | awk '{print $4}')\"}"
EOF
chmod +x step.sh

cat >pipeline.jsonl <<'EOF'
{"key": "fetch", "summary": "fetch", "description": "fetch the sources"}
{"key": "core", "summary": "build core", "description": "build the core library", "depends_on": ["fetch"]}
{"key": "cli", "summary": "build cli", "description": "build the command line", "depends_on": ["fetch"]}
{"key": "docs", "summary": "build docs", "description": "build the documentation", "depends_on": ["fetch"]}
{"key": "unit", "summary": "unit tests", "description": "run the unit tests", "depends_on": ["core"]}
{"key": "integration", "summary": "integration tests", "description": "run the integration tests", "depends_on": ["core", "cli"]}
{"key": "package", "summary": "package", "description": "build the packages", "depends_on": ["unit", "integration", "docs"]}
{"key": "publish", "summary": "publish", "description": "publish the release", "depends_on": ["package"], "priority": 9}
EOF

say "One PostgreSQL server on this machine, listening on 127.0.0.1 only; a database for the swarm."
show "psql -h 127.0.0.1 -U postgres -XAtc 'SELECT version()' | cut -d, -f1"
show "createdb -h 127.0.0.1 -U postgres $db"

say "Two hosts, each a network namespace with a link of its own (a veth pair) to this machine."
for h in a b; do
    n=$([ $h = a ] && echo 1 || echo 2)
    show "ip netns add host-$h"
    show "ip link add veth-$h type veth peer name eth0 netns host-$h"
    show "ip addr add 10.198.$n.1/30 dev veth-$h && ip link set veth-$h up"
    show "ip -n host-$h addr add 10.198.$n.2/30 dev eth0 && ip -n host-$h link set eth0 up && ip -n host-$h link set lo up"
done
say "The server listens on 127.0.0.1 only: each link's end on this side forwards to it."
for h in a b; do
    n=$([ $h = a ] && echo 1 || echo 2)
    printf '$ %s\n' "socat TCP-LISTEN:5432,bind=10.198.$n.1,reuseaddr,fork TCP:127.0.0.1:5432 &"
    socat "TCP-LISTEN:5432,bind=10.198.$n.1,reuseaddr,fork" TCP:127.0.0.1:5432 &
    pids+=($!)
done
# Wait for both forwarders to listen.
for n in 1 2; do
    until ip netns exec host-$([ $n = 1 ] && echo a || echo b) bash -c "exec 3<>/dev/tcp/10.198.$n.1/5432" 2>/dev/null; do sleep 0.05; done
done
show "ip netns exec host-a ip -4 -o addr show eth0 | awk '{print \$2, \$4}'"
show "ip netns exec host-b ip -4 -o addr show eth0 | awk '{print \$2, \$4}'"

say "Host A creates the schema and submits the DAG (8 tasks, dependencies by key)."
show "cat pipeline.jsonl"
show "ip netns exec host-a abathur --db postgres://postgres@10.198.1.1/$db db migrate"
show "ip netns exec host-a abathur --db postgres://postgres@10.198.1.1/$db task import pipeline.jsonl"

say "A worker on each host, each through its own link."
printf '$ %s\n' "ip netns exec host-a abathur --db postgres://postgres@10.198.1.1/$db worker --name host-a --concurrency 2 -- ./step.sh 2>host-a.log &"
ip netns exec host-a abathur --db "postgres://postgres@10.198.1.1/$db" worker --name host-a --concurrency 2 -- ./step.sh 2>host-a.log &
worker_a=$!
pids+=($worker_a)
printf '$ %s\n' "ip netns exec host-b abathur --db postgres://postgres@10.198.2.1/$db worker --name host-b --concurrency 2 -- ./step.sh 2>host-b.log &"
ip netns exec host-b abathur --db "postgres://postgres@10.198.2.1/$db" worker --name host-b --concurrency 2 -- ./step.sh 2>host-b.log &
worker_b=$!
pids+=($worker_b)
# Until nothing is left to run.
url="postgres://postgres@127.0.0.1/$db"
until [ "$(psql "$url" -XAtc "SELECT count(*) FROM tasks WHERE status <> 'completed'")" = 0 ]; do
    sleep 0.1
done
say "The DAG ran to the end; from this machine, the same database:"
show "abathur --db $url task list"
show "publish=\$(abathur --db $url task list | awk '/publish/ {print \$1}')"
show "abathur --db $url task tree \$publish"
show "abathur --db $url task history \$publish"
show "psql $url -XPpager=off -c \"SELECT t.summary, a.worker_id, t.result_data->>'ran_on' AS ran_on, a.started_at::time(3) AS started, a.finished_at::time(3) AS finished FROM task_attempts a JOIN tasks t ON t.id = a.task_id ORDER BY a.started_at\""

say "Each host's worker holds its connections over its own link."
show "ip netns exec host-a ss -Htn state established dst 10.198.1.1 | awk '{print \$3, \"->\", \$4}'"
show "ip netns exec host-b ss -Htn state established dst 10.198.2.1 | awk '{print \$3, \"->\", \$4}'"

say "Each worker's log (one line per task started and finished)."
printf '$ %s\n' "kill -TERM %3 %4; wait %3 %4"
kill -TERM "$worker_a" "$worker_b"
wait "$worker_a" "$worker_b" || true
show "cat host-a.log"
show "cat host-b.log"
