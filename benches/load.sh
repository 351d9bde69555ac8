#!/usr/bin/env bash
# Load benchmark of the example server over loopback with wrk.
#
# The protected route is compared with the practical ceiling of a stateless check: a bare
# axum server that verifies an HS256 JWT with jsonwebtoken (no database, no session check,
# same runtime, allocator, token transport and response size; `benches/support/
# bare_server.rs`), running all along on the same core and measured right before each
# protected-route figure. Client mode (`examples/client`, remote JWKS) is compared with it
# too. PostgreSQL's processes are pinned to the load core for the PostgreSQL runs (as a
# separate database host would be) and unpinned on exit.
#
#   benches/load.sh                 # SQLite + PostgreSQL, ~9 minutes
#   DURATION=5s BACKENDS=sqlite benches/load.sh
#
# The server (`examples/server`, release) is pinned to core 0 (`taskset -c 0`), wrk to
# core 1 (and PostgreSQL shares core 1 with wrk: it is not pinned). Every figure is
# printed with its ratio to a baseline measured in the same run (usually `GET /health`
# of the same server process). Bounded: fixed durations, 10 000 orders; stops by itself;
# the server is killed and the temporary databases are dropped on exit.
#
# Environment:
#   DURATION          wrk duration per measurement (default 10s)
#   CONNS             wrk connections for the GET / refresh loops (default 32)
#   LOGIN_CONNS       wrk connections of the login flood (default 8)
#   BACKENDS          "sqlite postgres" (default) or a subset
#   PG_ADMIN_URL      a PostgreSQL URL whose server gets a fresh database per run
#                     (default postgres://postgres@127.0.0.1:5432/postgres)
#   SENTRI_BCRYPT_COST  bcrypt cost of the server (default 10)
#   SERVER_CORE, LOAD_CORE  (default 0 and 1)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
LOGIN_CONNS=${LOGIN_CONNS:-8}
BACKENDS=${BACKENDS:-"sqlite postgres"}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
COST=${SENTRI_BCRYPT_COST:-10}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-39517}
BASE="http://127.0.0.1:$PORT"
FEATURES=sqlite,postgres,api-keys,client
BARE_PORT=$((PORT + 1))
CLIENT_PORT=$((PORT + 2))
BARE="http://127.0.0.1:$BARE_PORT"

command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }

log() { echo "== $*" >&2; }

log "building examples/server and the bench binary (release)"
cargo build --release --quiet --example server --example client --features "$FEATURES"
BENCH_EXE=$(cargo bench --bench sentri --features "$FEATURES" --no-run 2>&1 \
  | sed -n 's/.*Executable benches\/sentri.rs (\(.*\))/\1/p' | tail -n1)
SERVER_EXE="${CARGO_TARGET_DIR:-target}/release/examples/server"
CLIENT_EXE="${CARGO_TARGET_DIR:-target}/release/examples/client"
[ -x "$SERVER_EXE" ] && [ -x "$BENCH_EXE" ] || { echo "build products not found" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sentri-load.XXXXXX)
SERVER_PID=""
BARE_PID=""
CLIENT_PID=""
PG_DBS=()
PG_PINNED=0
pin_postgres() { # cpu list: every PostgreSQL process (new backends inherit it)
  for p in $(pgrep -x postgres) $(pgrep -f '^postgres:'); do taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true; done
}
cleanup() {
  for pid in "$SERVER_PID" "$BARE_PID" "$CLIENT_PID"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  if [ "$PG_PINNED" = 1 ]; then pin_postgres "0-$(( $(nproc) - 1 ))"; fi
  for db in "${PG_DBS[@]}"; do
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- wrk scripts -----------------------------------------------------------------------
# Every script ends with the same done(): one machine-readable line.
cat > "$WORK/done.lua" <<'EOF'
done = function(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read
             + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, errs))
end
EOF
script() { # name, body  -> path
  { printf '%s\n' "$2"; cat "$WORK/done.lua"; } > "$WORK/$1.lua"
  echo "$WORK/$1.lua"
}
PLAIN=$(script plain '')
REFRESH=$(script refresh '
local tokens = {}
init = function(args) for line in io.lines(args[1]) do tokens[#tokens + 1] = line end end
request = function()
  local t = table.remove(tokens) or "missing"
  return wrk.format("POST", "/auth/refresh", {["Content-Type"] = "application/json"},
    "{\"refreshToken\":\"" .. t .. "\"}")
end
response = function(status, headers, body)
  local t = body:match("\"refreshToken\":\"([^\"]+)\"")
  if t then tokens[#tokens + 1] = t end
end')
ORDERS=$(script orders '
local token, marker, n, got, limit = nil, nil, 0, 0, 10000
local payload = "{\"note\":\"" .. string.rep("x", 1012) .. "\"}"  -- 1 KiB body
init = function(args) token = args[1]; marker = args[2] end
request = function()
  n = n + 1
  return wrk.format("POST", "/api/orders", {["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json", ["X-Idempotency-Key"] = "rss-" .. n}, payload)
end
response = function(status, headers, body)
  got = got + 1
  -- wrk has no request count: stop this thread and tell the script (which sends wrk
  -- SIGINT, so it prints its summary without waiting for -d).
  if got == limit then
    wrk.thread:stop()
    local f = io.open(marker, "w"); f:write("done"); f:close()
  end
end')

# wrk_run <duration> <conns> <script> <url> [wrk args...] [-- script args]
wrk_run() {
  local dur=$1 conns=$2 lua=$3 url=$4; shift 4
  taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"$dur" --timeout 10s -s "$lua" "$url" "$@" \
    | sed -n 's/^RESULT //p'
}

# ---- server ----------------------------------------------------------------------------
start_server() { # db_url algorithm [throttle 0/1]
  SENTRI_ADDR="127.0.0.1:$PORT" DATABASE_URL="$1" SENTRI_ALGORITHM="$2" SENTRI_COOKIES=0 \
    SENTRI_THROTTLE="${3:-0}" \
    SENTRI_SECRET="load-benchmark-secret-0123456789abcdef" SENTRI_BCRYPT_COST="$COST" \
    RUST_LOG=warn taskset -c "$SERVER_CORE" "$SERVER_EXE" > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "$BASE/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$WORK/server.log" >&2
  echo "server did not start" >&2; exit 1
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}
rss_kb() { ps -o rss= -p "$SERVER_PID" | tr -d ' '; }

PASSWORD="correct horse battery staple"
register() { # identifier
  curl -fs -X POST "$BASE/auth/register" -H 'content-type: application/json' \
    -d "{\"identifier\":\"$1\",\"password\":\"$PASSWORD\"}" >/dev/null
}
login_json() { # identifier -> response body
  curl -fs -X POST "$BASE/auth/login" -H 'content-type: application/json' \
    -d "{\"identifier\":\"$1\",\"password\":\"$PASSWORD\"}"
}

# ---- the table -------------------------------------------------------------------------
ROWS="$WORK/rows"
: > "$ROWS"
row() { # backend alg case rps p50 p99 n errs ratio baseline-label
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$ROWS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# measure <backend> <alg> <case> <baseline rps or ""> <baseline label> <wrk args...>
measure() {
  local backend=$1 alg=$2 case=$3 base=$4 label=$5; shift 5
  local r; r=$(wrk_run "$@")
  read -r rps p50 p99 n errs <<< "$r"
  local q; if [ -n "$base" ]; then q=$(ratio "$rps" "$base"); else q=1.00; fi
  row "$backend" "$alg" "$case" "$rps" "$p50" "$p99" "$n" "$errs" "$q" "$label"
  log "$backend $alg $case: $rps req/s p50 ${p50}ms p99 ${p99}ms errors $errs (x$q $label)"
  LAST_RPS=$rps; LAST_P99=$p99
}

log "bcrypt bound: one hash at cost $COST on core $SERVER_CORE"
HASHES=$(SENTRI_BENCH_BCRYPT=$COST taskset -c "$SERVER_CORE" "$BENCH_EXE" | sed -n 's/^hashes_per_sec //p')
row "-" "-" "bcrypt hash cost $COST (1 core)" "$HASHES" "-" "-" "-" "-" "1.00" "login bound"

CACHE_RSS=$(SENTRI_BENCH_TOKEN_CACHE_RSS=1 "$BENCH_EXE" | sed -n 's/^token_cache_rss_mib //p')
row "-" "-" "verified-token cache full at its default bound: RSS added (MiB)" "$CACHE_RSS" "-" "-" "-" "-" "-" "target <= 32"

# The ceiling: the bare HS256 server, on the server core for the whole run.
SENTRI_BENCH_BARE_SERVER="127.0.0.1:$BARE_PORT" SENTRI_SECRET="load-benchmark-secret-0123456789abcdef" \
  taskset -c "$SERVER_CORE" "$BENCH_EXE" > "$WORK/bare.log" 2>&1 &
BARE_PID=$!
for _ in $(seq 1 100); do curl -fs "$BARE/health" >/dev/null 2>&1 && break; sleep 0.1; done
BARE_TOKEN=$(curl -fs "$BARE/token")
[ -n "$BARE_TOKEN" ] || { cat "$WORK/bare.log" >&2; echo "bare server did not start" >&2; exit 1; }

# bare_then <backend> <alg> <case> <url> <auth header>: the bare ceiling, then the case,
# back to back; the case's row has its req/s ratio to the bare row and its p99 ratio in
# the label.
bare_then() {
  local backend=$1 alg=$2 case=$3 url=$4 auth=$5
  measure "$backend" "$alg" "bare axum + jsonwebtoken HS256 (ceiling)" "" "baseline" \
    "$DURATION" "$CONNS" "$PLAIN" "$BARE/api/profile" -H "Authorization: Bearer $BARE_TOKEN"
  local bare_rps=$LAST_RPS bare_p99=$LAST_P99
  measure "$backend" "$alg" "$case" "$bare_rps" "bare ceiling" "$DURATION" "$CONNS" "$PLAIN" "$url" -H "$auth"
  local last; last=$(tail -n1 "$ROWS")
  sed -i '$d' "$ROWS"
  echo "$last" | awk -F'\t' -v l="bare ceiling req/s; p99 x$(ratio "$LAST_P99" "$bare_p99")" \
    'BEGIN{OFS="\t"} {$10=l; print}' >> "$ROWS"
}

# login_script <file> <identifier> <password>: a wrk script posting one login.
login_script() {
  cat > "$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"identifier":"$2","password":"$3"}'
EOF
  cat "$WORK/done.lua" >> "$1"
}

# during_flood <backend> <alg> <case> <login script> <idle p99> <auth header> <label>:
# the profile loop while an 8-connection login flood (started first, stopped after)
# runs on the same server; the row's ratio is its p99 to <idle p99>. Sets FLOOD_RPS.
during_flood() {
  local backend=$1 alg=$2 case=$3 lua=$4 idle_p99=$5 auth=$6 label=$7
  local secs=${DURATION%s}
  taskset -c "$LOAD_CORE" wrk -t1 -c"$LOGIN_CONNS" -d"$((secs + 3))s" --timeout 10s \
    -s "$lua" "$BASE/auth/login" > "$WORK/flood.out" 2>&1 &
  local flood=$!
  sleep 1
  measure "$backend" "$alg" "$case" "" "p99 vs idle" \
    "$DURATION" "$CONNS" "$PLAIN" "$BASE/api/profile" -H "$auth"
  wait "$flood" || true
  local last; last=$(tail -n1 "$ROWS")
  sed -i '$d' "$ROWS"
  echo "$last" | awk -F'\t' -v q="$(ratio "$LAST_P99" "$idle_p99")" -v l="$label" \
    'BEGIN{OFS="\t"} {$9=q; $10=l; print}' >> "$ROWS"
  FLOOD_RPS=$(sed -n 's/^RESULT //p' "$WORK/flood.out" | cut -d' ' -f1)
}

run_backend() { # backend db_url alg full(1/0) rss(1/0) client(1/0) many-rows(1/0)
  local backend=$1 url=$2 alg=$3 full=$4 rss=$5 client=${6:-0} many=${7:-0}
  log "server: $backend, $alg"
  start_server "$url" "$alg"
  local user="bench-$alg@example.com"
  register "$user"
  local idle_rss; idle_rss=$(rss_kb)
  local access; access=$(login_json "$user" | jq -r .data.accessToken)
  local bearer="Authorization: Bearer $access"

  measure "$backend" "$alg" "GET /health" "" "baseline" "$DURATION" "$CONNS" "$PLAIN" "$BASE/health"
  local health=$LAST_RPS
  # Warm the verified-token cache, then the protected route against the bare ceiling.
  curl -fs "$BASE/api/profile" -H "$bearer" >/dev/null
  bare_then "$backend" "$alg" "GET /api/profile (Bearer, protect)" "$BASE/api/profile" "$bearer"
  local profile_p99=$LAST_P99
  local profile_rps=$LAST_RPS

  if [ "$client" = 1 ]; then
    SENTRI_ADDR="127.0.0.1:$CLIENT_PORT" SENTRI_KEY_URI="$BASE/auth/keys" RUST_LOG=warn \
      taskset -c "$SERVER_CORE" "$CLIENT_EXE" > "$WORK/client.log" 2>&1 &
    CLIENT_PID=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$CLIENT_PORT/api/profile" -H "$bearer" >/dev/null 2>&1 && break; sleep 0.1; done
    bare_then "$backend" "$alg" "GET /api/profile (Bearer, client mode)" \
      "http://127.0.0.1:$CLIENT_PORT/api/profile" "$bearer"
    kill "$CLIENT_PID" 2>/dev/null || true; wait "$CLIENT_PID" 2>/dev/null || true; CLIENT_PID=""
  fi

  # --- api-keys: a route that admits keys (`require_scopes`; /api/profile admits sessions
  # only), with a warm key cache, ratio to the Bearer JWT row.
  local key; key=$(curl -fs -X POST "$BASE/auth/api-keys" -H 'content-type: application/json' \
    -H "$bearer" -d '{"name":"load","scopes":["orders:read"]}' | jq -r .data.key)
  measure "$backend" "$alg" "GET /api/orders (API key, require_scopes)" "$profile_rps" "Bearer JWT" \
    "$DURATION" "$CONNS" "$PLAIN" "$BASE/api/orders" -H "X-Sentri-Key: $key"

  # One session per token in the pool (2x the connections): no token is ever replayed.
  : > "$WORK/refresh-tokens"
  for _ in $(seq 1 $((CONNS * 2))); do
    login_json "$user" | jq -r .data.refreshToken >> "$WORK/refresh-tokens"
  done
  measure "$backend" "$alg" "POST /auth/refresh" "$health" "/health" \
    "$DURATION" "$CONNS" "$REFRESH" "$BASE/auth/refresh" -- "$WORK/refresh-tokens"
  local refresh_rps=$LAST_RPS

  if [ "$many" = 1 ]; then
    # The same with 1 000 000 other sessions (and their families) in the tables.
    log "inserting 1 000 000 other sessions"
    psql "$url" -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
INSERT INTO sentri_session_families (id, user_id, created_at, expires_at, max_expires_at)
  SELECT 'bulk-' || i, u.id, 0, 9000000000000, 9000000000000
  FROM generate_series(1, 1000000) AS i, (SELECT id FROM sentri_users LIMIT 1) AS u;
INSERT INTO sentri_sessions (id, user_id, family_id, refresh_hash, expires_at, created_at, last_used_at)
  SELECT 'bulk-' || i, u.id, 'bulk-' || i, md5(i::text) || md5('x' || i), 9000000000000, 0, 0
  FROM generate_series(1, 1000000) AS i, (SELECT id FROM sentri_users LIMIT 1) AS u;
ANALYZE sentri_sessions; ANALYZE sentri_session_families;
SQL
    : > "$WORK/refresh-tokens"
    for _ in $(seq 1 $((CONNS * 2))); do
      login_json "$user" | jq -r .data.refreshToken >> "$WORK/refresh-tokens"
    done
    measure "$backend" "$alg" "POST /auth/refresh (+1M other sessions)" "$refresh_rps" "refresh, empty tables" \
      "$DURATION" "$CONNS" "$REFRESH" "$BASE/auth/refresh" -- "$WORK/refresh-tokens"
  fi

  if [ "$full" = 1 ]; then
    login_script "$WORK/login.lua" "$user" "$PASSWORD"
    measure "$backend" "$alg" "POST /auth/login" "$HASHES" "bcrypt bound" \
      "$DURATION" "$LOGIN_CONNS" "$WORK/login.lua" "$BASE/auth/login"
    during_flood "$backend" "$alg" "GET /api/profile during login flood" "$WORK/login.lua" \
      "$profile_p99" "$bearer" "p99 / idle p99"
    row "$backend" "$alg" "  (login flood alongside)" "$FLOOD_RPS" "-" "-" "-" "-" \
      "$(ratio "$FLOOD_RPS" "$HASHES")" "bcrypt bound"
  fi

  if [ "$rss" = 1 ]; then
    local before after
    before=$(rss_kb)
    rm -f "$WORK/orders.done"
    taskset -c "$LOAD_CORE" wrk -t1 -c8 -d120s --timeout 10s -s "$ORDERS" "$BASE/api/orders" \
      -- "$access" "$WORK/orders.done" > "$WORK/orders.out" 2>&1 &
    local orders=$!
    while kill -0 "$orders" 2>/dev/null && [ ! -e "$WORK/orders.done" ]; do sleep 0.2; done
    kill -INT "$orders" 2>/dev/null || true
    wait "$orders" || true
    sleep 1
    after=$(rss_kb)
    local n; n=$(sed -n 's/^RESULT //p' "$WORK/orders.out" | cut -d' ' -f4)
    row "$backend" "$alg" "RSS idle (MiB)" "$(awk -v k="$idle_rss" 'BEGIN{printf "%.1f", k/1024}')" \
      "-" "-" "-" "-" "-" "after start"
    row "$backend" "$alg" "RSS before orders (MiB)" "$(awk -v k="$before" 'BEGIN{printf "%.1f", k/1024}')" \
      "-" "-" "-" "-" "$(ratio "$before" "$idle_rss")" "RSS idle"
    row "$backend" "$alg" "RSS +$n idempotent orders (MiB)" \
      "$(awk -v a="$after" -v b="$before" 'BEGIN{printf "+%.1f", (a-b)/1024}')" \
      "-" "-" "$n" "-" "$(ratio "$after" "$before")" "RSS before orders"
  fi

  if [ "$full" = 1 ]; then
    # A bad-password flood from one address against a server with throttling on
    # (SENTRI_THROTTLE=1, default policy): after 5 failures per identifier and 100 per
    # address every attempt is refused with 429 before hashing, so the flood costs only
    # request handling. Ratio: profile p99 during the flood / idle p99, same server.
    stop_server
    start_server "$url" "$alg" 1
    local tbearer; tbearer="Authorization: Bearer $(login_json "$user" | jq -r .data.accessToken)"
    measure "$backend" "$alg" "GET /api/profile (throttling on, idle)" "" "baseline" \
      "$DURATION" "$CONNS" "$PLAIN" "$BASE/api/profile" -H "$tbearer"
    login_script "$WORK/badlogin.lua" "$user" "not the password"
    during_flood "$backend" "$alg" "GET /api/profile during bad-password flood (throttled)" \
      "$WORK/badlogin.lua" "$LAST_P99" "$tbearer" "p99 / idle p99 (throttling on)"
    row "$backend" "$alg" "  (bad-password flood alongside, 401/429)" "$FLOOD_RPS" "-" "-" "-" "-" "-" "-"
  fi
  stop_server
}

for backend in $BACKENDS; do
  case $backend in
    sqlite)
      run_backend sqlite "sqlite://$WORK/eddsa.db?mode=rwc" EdDSA 1 1 1
      run_backend sqlite "sqlite://$WORK/es256.db?mode=rwc" ES256 0 0
      run_backend sqlite "sqlite://$WORK/rs256.db?mode=rwc" RS256 0 0
      # HS256: the algorithm of the "axum + jsonwebtoken, no database" ceiling.
      run_backend sqlite "sqlite://$WORK/hs256.db?mode=rwc" HS256 0 0
      ;;
    postgres)
      pin_postgres "$LOAD_CORE"; PG_PINNED=1
      for alg in EdDSA ES256 RS256; do
        db="sentri_bench_$$_$(echo "$alg" | tr 'A-Z' 'a-z')"
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $db" >/dev/null
        PG_DBS+=("$db")
        full=0; [ "$alg" = EdDSA ] && full=1
        run_backend postgres "${PG_ADMIN_URL%/*}/$db" "$alg" "$full" 0 0 "$full"
      done
      pin_postgres "0-$(( $(nproc) - 1 ))"; PG_PINNED=0
      ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
  esac
done

# ---- print -----------------------------------------------------------------------------
echo
echo "sentri load benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "server (and the bare ceiling) on core $SERVER_CORE, wrk -t1 and PostgreSQL on core $LOAD_CORE, $DURATION per figure, $CONNS connections ($LOGIN_CONNS for login), bcrypt cost $COST"
echo
printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' backend alg case "req/s (or value)" "p50 ms" "p99 ms" requests errors "ratio (to)"
printf '|---|---|---|---:|---:|---:|---:|---:|---|\n'
while IFS=$'\t' read -r b a c rps p50 p99 n e q label; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s× %s |\n' "$b" "$a" "$c" "$rps" "$p50" "$p99" "$n" "$e" "$q" "$label"
done < "$ROWS"
