#!/bin/bash
# The sampler beside the PyTorch peer (../shared/bench/peer_torch_cnn2.py) in one run, at the
# laptop and the paper sizes: the peer twice, bench/bench_sampler.py, the peer twice, so that a
# load change shows in the peer's spread. Run by hand from the repository root:
#     bash bench/peer_side_by_side.sh /path/to/torchvenv/bin/python
# (torch and numpy in a venv of their own: ../shared/bench/README.md).
set -euo pipefail
torch_python=${1:?usage: bash bench/peer_side_by_side.sh TORCH_PYTHON}
peer=../shared/bench/peer_torch_cnn2.py
[ -f "$peer" ] || { echo "peer script not found: $peer" >&2; exit 2; }
peer_rounds() {
  for r in "$@"; do
    echo "== peer round $r"
    OMP_NUM_THREADS=2 "$torch_python" "$peer" 256 16 8 64 3000
    OMP_NUM_THREADS=2 "$torch_python" "$peer" 1600 64 20 640 40
  done
}
peer_rounds 1 2
echo "== fleos"
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  .venv/bin/python bench/bench_sampler.py --laptop-steps 3000 --paper-steps 40 --rounds 3 \
  --layouts map,auto
peer_rounds 3 4
