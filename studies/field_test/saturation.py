"""How far the one-channel law's linear tilt is from the exact one: the top eigenvalue of
BᵀK⁻¹B (B = (σ_a²/NC)^½ Φ(w), K = K_f at Eq. 8's solution) over channels w ~ N(0, Σ_eq8), and
the slope of the exact (saturated) tilt against the linear one over the same channels
(`cnn2_matched.channel_log_tilt_saturated`, `channel_log_tilt`; docs/derivations/cnn2.md,
"The field test at the paper's scale"). Run by hand from the repository root (≈ 1 min):

    .venv/bin/python studies/field_test/saturation.py

On the exact referee's data (S = 2, N = 3, n = 40) and the paper's Fig. 3 data at n = 800
(S = 64, N = 20), σ² = 0.1, σ_a² = σ_w² = 2, erf, teacher_seed 0, data_seed 1.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - float64
from fleos.nets.data import make_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, discrepancy_and_inverse, solve_cnn2
from fleos.theory.eos.cnn2_matched import channel_log_tilt, channel_log_tilt_saturated

#: (label, model shape, n, n_test, widths): the data of studies/field_test/field_test.py and of
#: config/paper_cpu_gates.yaml
CASES = (("referee", {"S": 2, "N": 3}, 40, 200, (16, 32, 64, 128)),
         ("paper Fig. 3", {"S": 64, "N": 20}, 800, 1000, (160, 320, 640)))
DRAWS = 256


def main() -> None:
    print("| data | n | C | n/C | median top eigenvalue of BᵀK⁻¹B | slope, exact tilt on linear |")
    print("|---|---|---|---|---|---|")
    for label, shape, n, n_test, widths in CASES:
        model = {**shape, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
        ds = make_dataset("cnn2", model, n=n, n_test=n_test, teacher_seed=0, data_seed=1)
        pr = CNN2Problem.from_arrays(ds.X, ds.y, shape["N"], shape["S"], ds.X_test, ds.y_test,
                                     sigma2=0.1, sigma_a2=2.0, sigma_w2=2.0)
        for C in widths:
            eq8 = solve_cnn2(pr, float(C))
            eps, K_inv = discrepancy_and_inverse(pr.P, pr.y, eq8.x, pr.sigma2, pr.sigma_a2,
                                                 pr.activation)
            L = np.linalg.cholesky(np.asarray(eq8.x))
            w = jnp.asarray(np.random.default_rng(0).standard_normal((DRAWS, shape["S"])) @ L.T)
            c = pr.sigma_a2 / (shape["N"] * C)
            exact, top = channel_log_tilt_saturated(pr.P, w, jnp.outer(eps, eps), K_inv, c)
            linear = np.asarray(channel_log_tilt(pr.P, w, eps, K_inv, c / 2))
            slope = np.polyfit(linear - linear.mean(), np.asarray(exact), 1)[0]
            print(f"| {label} | {n} | {C} | {n / C:.2f} | {np.median(np.asarray(top)):.3f} | "
                  f"{slope:.3f} |")


if __name__ == "__main__":
    main()
