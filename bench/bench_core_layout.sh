#!/bin/bash
# One sampling job on both cores, or two jobs with one core each? Times the job's own step loop
# (bench_step_breakdown.py's `driver` program) three ways on a 2-core machine:
#   one-core   one job, XLA on one thread, pinned to core 1, the other core idle
#   two-cores  one job, XLA's default thread pool (both cores), not pinned
#   side-by-side  two copies of one-core at once, pinned to cores 0 and 1
# and prints each way's throughput of the whole machine in chain-steps/s. Run by hand on a
# quiet machine (never in CI); the arguments go to bench_step_breakdown.py, e.g.
#   bash bench/bench_core_layout.sh --config config/paper_cpu_fcn_n2000.yaml --experiment fcn3 \
#       --width 2000 --data results/paper_cpu_fcn_n2000/data/fcn3/n1024.npz --chains 2 --steps 20
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
one="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # run NAME CPUS XLA_FLAGS: the driver's median µs per chain-step into $tmp/NAME
    local name=$1 cpus=$2 flags=$3
    XLA_FLAGS="$flags" FLEOS_BLAS_THREADS=1 taskset -c "$cpus" \
        $py bench/bench_step_breakdown.py --programs driver --rounds 3 "${@:4}" > "$tmp/$name"
}
us() { awk -F'|' '/^\| driver/ {gsub(/ /, "", $5); print $5}' "$tmp/$1"; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); args: $*"
run one-core 1 "$one" "$@"
run two-cores 0,1 "" "$@"
run side0 0 "$one" "$@" & run side1 1 "$one" "$@" & wait
grep -h "UTC" "$tmp/one-core"
echo "| layout | µs per chain-step (median round) | machine throughput, chain-steps/s |"
echo "|---|---|---|"
for name in one-core two-cores; do
    u=$(us $name); echo "| $name | $u | $(awk -v u="$u" 'BEGIN {printf "%.2f", 1e6 / u}') |"
done
u0=$(us side0); u1=$(us side1)
echo "| side-by-side | $u0, $u1 | $(awk -v a="$u0" -v b="$u1" 'BEGIN {printf "%.2f", 1e6 / a + 1e6 / b}') |"
