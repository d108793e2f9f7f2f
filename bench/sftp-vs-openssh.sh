#!/usr/bin/env bash
# Moves the same file up and down through OpenSSH's sshd (internal-sftp) and
# through Ferry (`ferry serve`, release build) on loopback, with the same sftp
# client settings, and prints MiB/s, server CPU-seconds per GiB, and the
# Ferry/OpenSSH ratios. Run as root (sshd needs it). Usage:
#   bench/sftp-vs-openssh.sh [SIZE_MIB] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
ROUNDS=${2:-3}

command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || { echo "needs openssh-server (apt-get install openssh-server)"; exit 1; }
# FERRY_BIN: a ferry binary to measure instead of this tree's release build
# (e.g. an older commit's, for a before/after comparison).
if [ -n "${FERRY_BIN:-}" ]; then
  FERRY=$FERRY_BIN
else
  cargo build --release --workspace -q
  FERRY=$PWD/target/release/ferry
fi

work=$(mktemp -d "${TMPDIR:-/dev/shm}/ferry-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# sshd must be told its port: one below the kernel's ephemeral range (no port-0 bind or outgoing connection
# gets those), checked free; a start that still finds it taken is made again on another one.
claim_port() {
  python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(100):
    port = random.randrange(20000, low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
}
clk=$(getconf CLK_TCK)
# CPU seconds used by a process and its reaped children.
cpu_of() { awk -v t="$clk" '{printf "%.3f", ($14+$15+$16+$17)/t}' "/proc/$1/stat"; }

ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$work/payload"

# --- OpenSSH sshd with internal-sftp, root logging in with the client key.
mkdir -p /run/sshd "$work/sshd" "$work/openssh-home"
chmod 700 "$work/sshd"
ssh-keygen -q -t ed25519 -N '' -f "$work/sshd/host_ed25519"
cp "$work/client_key.pub" "$work/sshd/authorized_keys"
chmod 600 "$work/sshd/authorized_keys"
for attempt in 1 2 3 4; do
  SSHD_PORT=$(claim_port)
  cat > "$work/sshd/config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $work/sshd/host_ed25519
PermitRootLogin prohibit-password
AuthorizedKeysFile $work/sshd/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
PidFile $work/sshd/pid
CFG
  /usr/sbin/sshd -D -e -f "$work/sshd/config" 2>"$work/sshd/log" &
  SSHD_PID=$!
  # Listening ("Server listening on"), or gone (a bind failure ends it).
  until grep -q "Server listening on" "$work/sshd/log" || ! kill -0 "$SSHD_PID" 2>/dev/null; do sleep 0.05; done
  kill -0 "$SSHD_PID" 2>/dev/null && break
  grep -q "Address already in use" "$work/sshd/log" && [ "$attempt" -lt 4 ] || { cat "$work/sshd/log" >&2; exit 1; }
done
pids+=("$SSHD_PID")

# --- Ferry all-in-one, on ports the kernel picks (read back from its address file).
FERRY_DEFAULT_ADMIN_PASSWORD=bench-admin FERRY_LOG=warn "$FERRY" serve --data-dir "$work/ferry-data" \
  --sftp-bind 127.0.0.1:0 --http-bind 127.0.0.1:0 --grpc-bind 127.0.0.1:0 --addr-file "$work/ferry.addrs" \
  >"$work/ferry.log" 2>&1 &
FERRY_PID=$!; pids+=("$FERRY_PID")
until [ -f "$work/ferry.addrs" ]; do kill -0 "$FERRY_PID" 2>/dev/null || { cat "$work/ferry.log" >&2; exit 1; }; sleep 0.05; done
FERRY_SFTP=$(awk '$1 == "sftp" {sub(/.*:/, "", $2); print $2; exit}' "$work/ferry.addrs")
FERRY_HTTP=$(awk '$1 == "http" {sub(/.*:/, "", $2); print $2; exit}' "$work/ferry.addrs")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$FERRY_HTTP/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fs -u admin:bench-admin "http://127.0.0.1:$FERRY_HTTP/api/v2/token" | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
python3 - "$work" > "$work/user.json" <<'PY'
import json, sys
w = sys.argv[1]
print(json.dumps({"username": "bench", "home_dir": w + "/ferry-home", "permissions": {"/": ["*"]},
                  "public_keys": [open(w + "/client_key.pub").read().strip()]}))
PY
curl -fs -H "Authorization: Bearer $TOKEN" -X POST "http://127.0.0.1:$FERRY_HTTP/api/v2/users" -d @"$work/user.json" >/dev/null
# The edge answers SSH once the control plane has sent it the host keys.
for _ in $(seq 100); do ssh-keyscan -T 2 -p "$FERRY_SFTP" 127.0.0.1 2>/dev/null | grep -q ssh- && break; sleep 0.1; done

SFTP=(sftp -q -oCompression=no -c aes128-gcm@openssh.com -R 64 -B 261120 -oBatchMode=yes
      -oStrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null -oLogLevel=ERROR -i "$work/client_key")

# run NAME PORT USER REMOTE_DIR DIRECTION -> prints "seconds cpu_seconds"
run() {
  local port=$2 user=$3 remote=$4 dir=$5 pid=$6
  if [ "$dir" = up ]; then echo "put $work/payload $remote/payload" > "$work/batch"
  else echo "get $remote/payload $work/download" > "$work/batch"; fi
  local c0 c1 t0 t1
  c0=$(cpu_of "$pid"); t0=$(date +%s.%N)
  "${SFTP[@]}" -P "$port" -b "$work/batch" "$user@127.0.0.1" >/dev/null
  t1=$(date +%s.%N); c1=$(cpu_of "$pid")
  if [ "$dir" = down ]; then cmp -s "$work/payload" "$work/download" || { echo "download differs" >&2; exit 1; }; rm -f "$work/download"; fi
  awk -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" 'BEGIN {print b - a, d - c}'
}

declare -A secs cpus
for r in $(seq "$ROUNDS"); do
  for dir in up down; do
    read -r s c < <(run openssh "$SSHD_PORT" root "$work/openssh-home" "$dir" "$SSHD_PID"); secs[openssh_$dir]+="$s "; cpus[openssh_$dir]+="$c "
    read -r s c < <(run ferry "$FERRY_SFTP" bench "" "$dir" "$FERRY_PID"); secs[ferry_$dir]+="$s "; cpus[ferry_$dir]+="$c "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%s MiB x %s rounds, sftp -c aes128-gcm@openssh.com -R 64 -B 261120 (medians)\n" "$SIZE_MIB" "$ROUNDS"
printf "%-6s %-8s %10s %14s\n" dir server "MiB/s" "cpu-s/GiB"
for dir in up down; do
  for srv in openssh ferry; do
    s=$(echo "${secs[${srv}_$dir]}" | median); c=$(echo "${cpus[${srv}_$dir]}" | median)
    awk -v d="$dir" -v v="$srv" -v m="$SIZE_MIB" -v s="$s" -v c="$c" 'BEGIN {printf "%-6s %-8s %10.1f %14.2f\n", d, v, m / s, c * 1024 / m}'
  done
  so=$(echo "${secs[openssh_$dir]}" | median); sf=$(echo "${secs[ferry_$dir]}" | median)
  awk -v d="$dir" -v a="$so" -v b="$sf" 'BEGIN {printf "%-6s ferry/openssh throughput ratio: %.2f\n", d, a / b}'
done
