#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by tests/slurm/start_cluster.sh, by PID.
# Safe to run when it is not running. Leaves packages, configuration and logs in place.
set -euo pipefail

STATE="${FLEOS_SLURM_STATE:-/var/lib/fleos-slurm}"
log() { echo "[stop_cluster] $*" >&2; }

stop() {  # stop PIDFILE NAME: send TERM to the NAME process in PIDFILE and wait for it
    local pidfile="$1" name="$2" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    # Check the process name, so a stale PID file never makes us kill an unrelated process.
    if [[ -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm")" == "$name" ]]; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
        if [[ -d "/proc/$pid" ]]; then
            log "$name (pid $pid) ignored TERM for 10 s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop "$STATE/slurmd.pid" slurmd
stop "$STATE/slurmctld.pid" slurmctld
stop /run/munge/munged.pid munged
log "stopped"
