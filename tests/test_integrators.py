"""The integrator registry `fleos.sampling.sampler.INTEGRATORS`: an integrator is one
(init, step) entry with a typed state, and a job's checkpoint carries any pytree state.

The dummy integrator "counted_ula", registered by these tests only, is ULA whose noise is
keyed by a step counter kept in its own NamedTuple state instead of by the chain's epoch
(the counter starts at COUNT0, not at the epoch). Its chains are reproduced only if the
counter is carried exactly: a restore that drops the state (the counter re-initialised to
COUNT0) or mangles it (another value, dtype or chain) changes every later step.
Tiny job of tests/test_experiment.py (2-layer CNN, n=8, C=4, two chains, 600 steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_experiment import JOB, MODEL, _assert_identical, _exp, _interrupted

import fleos.config as fconfig
from fleos.nets.data import make_dataset
from fleos.nets.datasets import save_dataset
from fleos.sampling import sampler
from fleos.sampling.experiment import CheckpointMismatchError, _tree_arrays, run_job
from fleos.sampling.io import load_checkpoint, read_samples
from fleos.sampling.sampler import ChainState, IntegratorDef

COUNT0 = 1000


class CounterState(NamedTuple):
    count: jax.Array  # int32: the key of the next step's noise
    last_sse: jax.Array  # sse before the last step (the sampler dtype)


def counted_init(potential: Any, params: Any, chain_key: jax.Array, step: Any = 0,
                 precond: Any = None, integrator: Any = None) -> CounterState:
    del chain_key, step, precond, integrator
    dtype = jax.tree.leaves(params)[0].dtype
    return CounterState(jnp.int32(COUNT0), jnp.zeros((), dtype))


def counted_step(potential: Any, state: ChainState, chain_key: jax.Array, lr: Any,
                 precond: Any = None, integrator: Any = None) -> tuple[ChainState, Any]:
    del integrator
    count = state.extra.count
    new, info = sampler.ula_step(potential, state._replace(step=count), chain_key, lr, precond)
    return (ChainState(new.params, state.step + jnp.int32(1), CounterState(count + 1, info.sse)),
            info)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "n8.npz"
    save_dataset(make_dataset("cnn2", MODEL, 8, 5, 0, 1), p)
    return p


@pytest.fixture
def counted(monkeypatch):
    """Register "counted_ula" in the sampler's registry and the config's list, for one test."""
    def register(init=counted_init, step=counted_step):
        monkeypatch.setitem(sampler.INTEGRATORS, "counted_ula", IntegratorDef(init, step))
        monkeypatch.setattr(fconfig, "INTEGRATORS", (*fconfig.INTEGRATORS, "counted_ula"))

    register()
    return register


def test_registered_integrator_resumes_bit_identically(counted, data_path, tmp_path) -> None:
    exp = _exp(integrator="counted_ula")
    ref = tmp_path / "ref.h5"
    run_job(exp, JOB, data_path, ref, progress=False)
    # The counter drives the noise: the dummy's chains are not ULA's (keyed by the epoch),
    # so the comparison below sees the counter's value.
    ula = tmp_path / "ula.h5"
    run_job(_exp(), JOB, data_path, ula, progress=False)
    assert not np.array_equal(read_samples(ref)["loss"]["sse"], read_samples(ula)["loss"]["sse"])

    out, ckpt = _interrupted(exp, data_path, tmp_path)
    doc = load_checkpoint(ckpt)
    step, a = doc["meta"]["step"], doc["arrays"]
    assert step == 200  # checkpoint_every
    # The typed state went to disk under its field names, one value per chain.
    assert a["extra"]["count"].dtype == np.int32
    np.testing.assert_array_equal(a["extra"]["count"], [COUNT0 + step] * 2)
    np.testing.assert_array_equal(a["extra"]["last_sse"], a["losses"][:, -1])

    lines: list[str] = []
    run_job(exp, JOB, data_path, out, checkpoint_path=ckpt, log=lines.append)
    assert any("resumed from checkpoint" in line for line in lines)
    _assert_identical(ref, out)


def test_checkpoint_of_another_state_layout_is_refused_naming_the_leaf(
        counted, data_path, tmp_path) -> None:
    """The same job resumed by an integrator whose state gained a field (same name, so the
    same config hash): refused in one line naming the file and the missing leaf; the
    checkpoint stays."""
    exp = _exp(integrator="counted_ula")
    out, ckpt = _interrupted(exp, data_path, tmp_path)

    class Wider(NamedTuple):
        count: jax.Array
        last_sse: jax.Array
        other: jax.Array

    def wider_init(potential, params, chain_key, step=0, precond=None, integrator=None):
        return Wider(*counted_init(potential, params, chain_key), jnp.zeros((), jnp.float32))

    counted(init=wider_init)
    with pytest.raises(CheckpointMismatchError,
                       match=r"job\.ckpt lacks extra/other .*delete it to restart"):
        run_job(exp, JOB, data_path, out, checkpoint_path=ckpt, progress=False)
    assert ckpt.exists() and not out.exists()


def test_typed_states_keep_the_checkpoint_layout_of_dict_states() -> None:
    """BAOAB's and MALA's NamedTuple states are stored under the names their dict states had,
    so checkpoints written before the states were typed still resume."""
    grad = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32)}
    u, sse = np.float32(1.5), np.float32(2.5)
    baoab = sampler.BAOABState(grad=grad, U=u, sse=sse, u=grad)
    as_dict = {"grad": grad, "U": u, "sse": sse, "u": grad}
    assert jax.tree.structure(_tree_arrays(baoab)) == jax.tree.structure(as_dict)
    assert _tree_arrays(sampler.MALAState(grad, u, sse)).keys() == {"grad", "U", "sse"}
    assert _tree_arrays(None) == {}


def test_registry_is_the_one_list_of_integrators() -> None:
    """The config validates against the registry's names (it sits below sampling in the
    import tiers, so it keeps the list; this is the check that they agree)."""
    assert tuple(sampler.INTEGRATORS) == fconfig.INTEGRATORS
    for name, spec in sampler.INTEGRATORS.items():
        assert callable(spec.init) and callable(spec.step), name
