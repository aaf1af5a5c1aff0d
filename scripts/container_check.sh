#!/usr/bin/env bash
# `make container-check`: build the Dockerfile with podman and prove the image and the compose
# topology work: a non-root user, a quick `--help`, the demo, one send against PostgreSQL, then
# migrate + app + two workers sending one day with every subscriber mailed exactly once.
#
# Everything runs on the host's network and talks only to 127.0.0.1 (the machine's PostgreSQL, a
# capture SMTP server run from the image itself), besides the package registries the build uses.
# Everything it starts is removed on exit, whatever the outcome; what it captured stays in
# container-check-output/ for a look.
#
#   NEWSLETTER_TEST_POSTGRES_URL  server to create a scratch database on (default: local test db)
#   BASE_IMAGE                    build on this base instead of python:3.11-slim or the bootstrap
#   PODMAN_COMPOSE                podman-compose to use (default: .venv/bin/podman-compose)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/newsletter:latest
REGISTRY_BASE=docker.io/library/python:3.11-slim
PG_URL=${NEWSLETTER_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
PODMAN_COMPOSE=${PODMAN_COMPOSE:-.venv/bin/podman-compose}
OUT=$PWD/container-check-output
DAY=2026-02-11
SUBSCRIBERS=300
RUN_ID=$$
PROJECT=newsletter-check-$RUN_ID
# crun trips over this kernel's hybrid cgroups and refuses to raise rlimits: runc with cgroupfs
# and lowered limits works everywhere podman does.
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
run=("${podman[@]}" run --rm --network host "${limits[@]}" --label "newsletter-check=$RUN_ID")
compose=("$PODMAN_COMPOSE" -p "$PROJECT" -f docker-compose.yml -f scripts/container_check.compose.yml
    --in-pod false --podman-args "--runtime runc --cgroup-manager=cgroupfs"
    --podman-run-args "${limits[*]} --label newsletter-check=$RUN_ID")

started=$SECONDS
step() { printf '\n== container-check: %s (%ds)\n' "$*" $((SECONDS - started)); }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '\ncontainer-check FAILED: %s\n' "$*" >&2; exit 1; }

databases=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -x "$PODMAN_COMPOSE" ]; then
        "${compose[@]}" down -t 5 >/dev/null 2>&1 || true
    fi
    local ids
    ids=$("${podman[@]}" ps -aq --filter "label=newsletter-check=$RUN_ID" 2>/dev/null || true)
    [ -z "$ids" ] || "${podman[@]}" rm -f -t 0 $ids >/dev/null 2>&1 || true
    for db in "${databases[@]}"; do
        psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Creates a database of this run's own, sets $scratch_url to it; cleanup drops it.
scratch_database() {
    local name="newsletter_check_${RUN_ID}_$1"
    databases+=("$name")
    psql "$PG_URL" -q -c "CREATE DATABASE $name" >/dev/null
    scratch_url="${PG_URL%/*}/$name"
}

# A folder the image's unprivileged user (uid 10001) can write into; with `maildir`, laid out as
# one (the capture server only creates the layout in a folder that does not exist yet).
shared_dir() {
    mkdir -p "$1"
    [ "${2:-}" != maildir ] || mkdir -p "$1/tmp" "$1/new" "$1/cur"
    chown -R 10001:10001 "$1" 2>/dev/null || chmod -R 0777 "$1"
}

# Per-recipient counts of a Maildir the capture server wrote; fails unless `expected` recipients
# each got exactly one message.
one_each() {
    python3 - "$1" "$2" <<'PY'
import collections, mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
counts = collections.Counter(m["X-RcptTo"] for m in box)
repeated = {r: n for r, n in counts.items() if n != 1}
print(f"{sum(counts.values())} messages to {len(counts)} recipients, repeated: {len(repeated)}")
sys.exit(0 if len(counts) == int(sys.argv[2]) and not repeated else 1)
PY
}

message_count() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }

step "tools"
missing=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
[ -x "$PODMAN_COMPOSE" ] || fail "no podman-compose at $PODMAN_COMPOSE (make container-check installs it)"
psql "$PG_URL" -q -c 'SELECT 1' >/dev/null || fail "PostgreSQL at $PG_URL does not answer"
ok "$("${podman[@]}" --version), $("$PODMAN_COMPOSE" --version 2>/dev/null | head -n1)"

step "base image"
if [ -n "${BASE_IMAGE:-}" ]; then
    base=$BASE_IMAGE
elif "${podman[@]}" image exists "$REGISTRY_BASE" \
    || timeout 20 "${podman[@]}" pull --quiet "$REGISTRY_BASE" >/dev/null 2>&1; then
    base=$REGISTRY_BASE
else
    echo "   $REGISTRY_BASE cannot be pulled: using a base bootstrapped from Debian's packages"
    base=$(scripts/container_base.sh)
fi
ok "$base"

step "build $IMAGE"
build=("${podman[@]}" build --network host "${limits[@]}" --build-arg "BASE_IMAGE=$base" -t "$IMAGE")
# An egress proxy that re-signs TLS needs its CA inside the build too; a build secret lends it to
# pip without leaving it in a layer.
cert=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}
[ -z "$cert" ] || [ ! -s "$cert" ] || build+=(--secret "id=pip-cert,src=$cert")
mkdir -p "$OUT"
"${build[@]}" . >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; fail "podman build (log: $OUT/build.log)"; }
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$IMAGE")
ok "built; the image weighs $((size / 1000000)) MB (base: $(( $("${podman[@]}" image inspect --format '{{.Size}}' "$base") / 1000000 )) MB)"

step "image: unprivileged, no build tools, quick to start"
rm -rf "$OUT/demo" "$OUT/send" "$OUT/topology"
user=$("${run[@]}" --entrypoint id "$IMAGE" -u)
[ "$user" != 0 ] || fail "the image runs as root"
ok "runs as uid $user"
tools=$("${run[@]}" --entrypoint sh "$IMAGE" -c \
    'for t in gcc cc c++ make ld /opt/newsletter/bin/pip; do command -v "$t" || true; done')
[ -z "$tools" ] || fail "build tools in the image: $tools"
ok "no compiler, make, linker or pip in the final stage"
help_started=$(date +%s%N)
"${run[@]}" "$IMAGE" --help >/dev/null
help_wall=$((($(date +%s%N) - help_started) / 1000000))
# CPU time is the start's own cost; wall time also counts whatever else the machine is doing.
read -r help_cpu help_inside < <("${run[@]}" --entrypoint python3 "$IMAGE" -c '
import resource, subprocess, time
start = time.perf_counter()
subprocess.run(["newsletter", "--help"], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(round((usage.ru_utime + usage.ru_stime) * 1000), round(wall * 1000))')
[ "$help_cpu" -lt 1000 ] || fail "newsletter --help took ${help_cpu} ms of CPU"
ok "newsletter --help: ${help_cpu} ms of CPU, ${help_inside} ms wall in the container, ${help_wall} ms with podman's start"

step "image: newsletter demo, mail captured in a mounted folder"
shared_dir "$OUT/demo"
"${run[@]}" -v "$OUT/demo:/out" "$IMAGE" demo --workdir /out/demo >"$OUT/demo.log" 2>&1 \
    || { cat "$OUT/demo.log" >&2; fail "newsletter demo"; }
captured=$(find "$OUT/demo/demo/mail" -name '*.eml' | wc -l)
grep -q "^$captured messages captured; papers repeated to anyone: 0$" "$OUT/demo.log" \
    || { cat "$OUT/demo.log" >&2; fail "the demo's report does not match the $captured .eml files"; }
[ "$captured" -gt 0 ] || fail "the demo captured no mail"
ok "$captured messages in $OUT/demo/demo/mail"

step "image: init, fetch from a file and send against PostgreSQL"
scratch_database send
url=$scratch_url
smtp_port=$(free_port)
shared_dir "$OUT/send/mail" maildir
"${run[@]}" -d --name "$PROJECT-smtp" -v "$OUT/send/mail:/mail" --entrypoint python3 "$IMAGE" \
    -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox /mail >/dev/null
printf 'email,topics,keywords\nada@example.org,compilers,\ngrace@example.org,,quantization\nalan@example.org,,\n' \
    >"$OUT/send/subscribers.csv"
export NEWSLETTER_SECRET_KEY
NEWSLETTER_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
nl=("${run[@]}" -e "NEWSLETTER_DATABASE_URL=$url" -e NEWSLETTER_SECRET_KEY
    -e NEWSLETTER_SMTP_HOST=127.0.0.1 -e "NEWSLETTER_SMTP_PORT=$smtp_port"
    -v "$PWD/newsletter/sample_data:/samples:ro" -v "$OUT/send:/in:ro" "$IMAGE")
"${nl[@]}" init
"${nl[@]}" subscribers import /in/subscribers.csv
"${nl[@]}" fetch --source "/samples/$DAY.json" --date "$DAY"
"${nl[@]}" send --date "$DAY" --now | tee "$OUT/send/send.log"
grep -q '^sent: 3 ' "$OUT/send/send.log" || fail "send did not send 3 digests"
result=$(one_each "$OUT/send/mail" 3) || fail "captured mail: $result"
ok "$result"
"${podman[@]}" rm -f -t 0 "$PROJECT-smtp" >/dev/null

step "compose: smtp capture, migrate, app (run) and two workers"
export NEWSLETTER_SMTP_HOST=127.0.0.1 CHECK_MAILDIR=$OUT/topology/mail
export CHECK_DATABASE_URL CHECK_SMTP_PORT CHECK_WEB_PORT
scratch_database topology
CHECK_DATABASE_URL=$scratch_url
CHECK_SMTP_PORT=$(free_port)
CHECK_WEB_PORT=$(free_port)
shared_dir "$CHECK_MAILDIR" maildir
# In the order depends_on gives (the `db` it names is the machine's PostgreSQL here).
compose_up() {
    "${compose[@]}" up -d --no-deps "$@" >>"$OUT/compose-up.log" 2>&1 \
        || { cat "$OUT/compose-up.log" >&2; fail "podman-compose up $*"; }
}
compose_up smtp migrate
migrate=${PROJECT}_migrate_1
[ "$("${podman[@]}" wait "$migrate")" = 0 ] || { "${podman[@]}" logs "$migrate" >&2; fail "migrate failed"; }
compose_up --scale worker=2 app worker
"${podman[@]}" ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '   {{.Names}}: {{.Status}}'
ok "migrate: $("${podman[@]}" logs $migrate 2>&1 | tail -n1)"
for _ in $(seq 1 60); do
    health=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$CHECK_WEB_PORT/healthz', timeout=2).read().decode())" 2>/dev/null) && break
    sleep 0.5
done
[ "${health:-}" = '{"status":"ok"}' ] || { "${compose[@]}" logs app >&2 || true; fail "/healthz did not answer ok"; }
ok "/healthz from the app container: $health"

step "compose: a day fetched from a file and sent to $SUBSCRIBERS subscribers"
python3 -c "
print('email,topics,keywords')
for i in range($SUBSCRIBERS): print(f'reader{i}@example.org,,')" >"$OUT/topology/subscribers.csv"
oneoff=("${run[@]}" -e "NEWSLETTER_DATABASE_URL=$CHECK_DATABASE_URL" -e NEWSLETTER_SECRET_KEY
    -v "$PWD/newsletter/sample_data:/samples:ro" -v "$OUT/topology:/in:ro" "$IMAGE")
"${oneoff[@]}" subscribers import /in/subscribers.csv
"${oneoff[@]}" fetch --source "/samples/$DAY.json" --date "$DAY"
"${oneoff[@]}" plan --date "$DAY" --now
for _ in $(seq 1 120); do
    [ "$(message_count "$CHECK_MAILDIR")" -ge "$SUBSCRIBERS" ] && break
    sleep 0.5
done
sleep 2  # long enough for a duplicate to arrive, if any sender were to send one
"${oneoff[@]}" status --date "$DAY" | tee "$OUT/topology/status.log"
grep -q "^  sent: $SUBSCRIBERS$" "$OUT/topology/status.log" || fail "not every delivery is sent"
result=$(one_each "$CHECK_MAILDIR" "$SUBSCRIBERS") || fail "captured mail: $result"
ok "$result"
# SIGTERM: each worker finishes its batch and says what it sent.
"${podman[@]}" stop -t 10 "${PROJECT}_worker_1" "${PROJECT}_worker_2" "${PROJECT}_app_1" >/dev/null
shares=()
for id in "${PROJECT}_worker_1" "${PROJECT}_worker_2"; do
    sent=$("${podman[@]}" logs "$id" 2>/dev/null | sed -n 's/^worker done: sent \([0-9]*\)$/\1/p')
    [ -n "$sent" ] || { "${podman[@]}" logs "$id" >&2; fail "a worker did not report what it sent"; }
    shares+=("$sent")
done
[ "${shares[0]}" -gt 0 ] && [ "${shares[1]}" -gt 0 ] || fail "the workers did not share the work: ${shares[*]}"
ok "workers sent ${shares[0]} and ${shares[1]}, the app's own sender $((SUBSCRIBERS - shares[0] - shares[1]))"

step "passed in $((SECONDS - started)) s"
