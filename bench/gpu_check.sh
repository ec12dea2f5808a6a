#!/usr/bin/env bash
# The GPU check of the sampler, run by hand on a CUDA machine from the repo root:
#   OUT=/some/dir bash bench/gpu_check.sh
# Needs jax with CUDA, flax, h5py, scipy, pyyaml, threadpoolctl in `python3` (fleos from src/).
# 1. bench/bench_sampler.py: 1 and 8 vmapped chains at laptop and paper size, beside the
#    float32 matmul peak measured in the same run;
# 2. one real 8-chain paper-size sampling job (config/paper_cpu.yaml: n = 1600, C = 640,
#    BAOAB, 1200 steps) through `fleos sample`, timed end to end (compilation included).
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
python3 bench/bench_sampler.py --paper-steps 400 --laptop-steps 2000 2>&1 | tee "$OUT/bench_sampler.md"
python3 - <<'PY'
import os
import fleos  # noqa: F401
from fleos.nets.data import make_dataset
from fleos.nets.datasets import save_dataset
ds = make_dataset("cnn2", {"S": 64, "N": 20, "activation": "erf", "sigma_w2": 2.0,
                           "sigma_a2": 2.0}, 1600, 1000, 0, 1)
save_dataset(ds, os.path.join(os.environ.get("OUT", "/tmp/gpu_check"), "n1600.npz"))
PY
start=$(date +%s.%N)
python3 -m fleos.cli sample --config config/paper_cpu.yaml --experiment cnn2 --n 1600 \
    --width 640 --seeds 0 1 2 3 4 5 6 7 --data "$OUT/n1600.npz" --out "$OUT/w640_8chains.h5" \
    --progress-every 5 2>&1 | tee "$OUT/sample_8chains.log"
end=$(date +%s.%N)
python3 -c "print(f'8-chain paper-size job (1200 BAOAB steps, n=1600, C=640): wall {$end - $start:.1f} s')" | tee -a "$OUT/sample_8chains.log"
