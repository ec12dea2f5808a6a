#!/usr/bin/env bash
# Install (Debian, apt) and start a one-node SLURM cluster on this machine, as root.
#
# Idempotent: running it again on a machine where the cluster is up changes nothing; where
# some daemons died it restarts only those. Stop it with tests/slurm/stop_cluster.sh.
#
# There is no systemd on CI machines, so munged, slurmctld and slurmd are started directly
# as daemons and tracked through their PID files under $FLEOS_SLURM_STATE.
# No accounting daemon (slurmdbd) is run: the profile polls job status with `squeue`, and
# slurm.conf keeps finished jobs visible to squeue for MinJobAge=3600 s (docs/cluster.md).
#
# Environment:
#   FLEOS_SLURM_STATE   state/log directory (default /var/lib/fleos-slurm)
#   FLEOS_SLURM_MEM_MB  node RealMemory (default: 90 % of what `slurmd -C` reports)
#   FLEOS_SLURM_NO_APT  set to 1 to skip apt-get (packages already installed)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${FLEOS_SLURM_STATE:-/var/lib/fleos-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# fleos one-node test cluster"

log() { echo "[start_cluster] $*" >&2; }
die() { echo "[start_cluster] ERROR: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"

# ---- 1. packages -------------------------------------------------------------------------
PKGS=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    [[ "${FLEOS_SLURM_NO_APT:-0}" == 1 ]] && die "missing packages ${missing[*]} and FLEOS_SLURM_NO_APT=1"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. configuration --------------------------------------------------------------------
mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm
HOST="$(hostname -s)"
# The node description must match what slurmd detects, or slurmctld drains the node.
read -r CPUS BOARDS SOCKETS CORES THREADS REALMEM < <(
    slurmd -C | head -1 | tr ' ' '\n' | awk -F= '
        $1=="CPUs"{c=$2} $1=="Boards"{b=$2} $1=="SocketsPerBoard"{s=$2}
        $1=="CoresPerSocket"{k=$2} $1=="ThreadsPerCore"{t=$2} $1=="RealMemory"{m=$2}
        END{print c, b, s, k, t, m}')
[[ -n "$CPUS" && -n "$REALMEM" ]] || die "could not parse 'slurmd -C' output"
MEM="${FLEOS_SLURM_MEM_MB:-$((REALMEM * 9 / 10))}"

new_conf="$(mktemp)"
sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" \
    -e "s|@BOARDS@|$BOARDS|g" -e "s|@SOCKETS@|$SOCKETS|g" -e "s|@CORES@|$CORES|g" \
    -e "s|@THREADS@|$THREADS|g" -e "s|@MEM@|$MEM|g" \
    -e "s|@CTLD_PORT@|${FLEOS_SLURM_CTLD_PORT:-6817}|g" -e "s|@D_PORT@|${FLEOS_SLURM_D_PORT:-6818}|g" \
    "$HERE/slurm.conf.in" > "$new_conf"
if [[ -f "$CONF" ]] && ! head -1 "$CONF" | grep -qF "$MARKER"; then
    rm -f "$new_conf"
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's configuration"
fi
conf_changed=0
if ! cmp -s "$new_conf" "$CONF"; then
    install -m 644 "$new_conf" "$CONF"
    conf_changed=1
    log "wrote $CONF (node $HOST: $CPUS CPUs, $MEM MB)"
fi
rm -f "$new_conf"

# ---- 3. daemons --------------------------------------------------------------------------
alive() {  # alive PIDFILE NAME: the PID in PIDFILE is a running NAME process
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -r "/proc/$pid/comm" ]] && [[ "$(cat "/proc/$pid/comm")" == "$2" ]]
}

# munge: the key is created by the Debian package; create one if it is missing.
install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# A changed configuration needs a restart of the SLURM daemons to take effect.
if ((conf_changed)); then
    for d in slurmd slurmctld; do
        if alive "$STATE/$d.pid" "$d"; then
            log "configuration changed: stopping $d"
            kill "$(cat "$STATE/$d.pid")"
            for _ in $(seq 100); do alive "$STATE/$d.pid" "$d" || break; sleep 0.1; done
        fi
    done
fi
if ! alive "$STATE/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld
fi
if ! alive "$STATE/slurmd.pid" slurmd; then
    log "starting slurmd"
    slurmd
fi

# ---- 4. wait for the node ----------------------------------------------------------------
state=""
for _ in $(seq 60); do
    state="$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*|fail*)
            # A node left DOWN by an earlier run (e.g. slurmd killed) comes back here.
            scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *) die "node $HOST is '$state', not idle after 30 s (logs: $STATE/slurmctld.log, $STATE/slurmd.log)" ;;
esac
log "cluster up: node $HOST is $state (state and logs in $STATE)"
