"""grpo_rank.allocation.importance: the module norms sqrt(||grad A||^2 + ||grad B||^2) and their sums, on records
whose answers are known by construction, against a plain per-row loop (the definition, written out),
and read back from parquet exactly as computed in memory.

    python -m pytest tests/test_importance.py -q
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpo_rank.allocation import importance as imp
from grpo_rank.record.files import GRAD_COLUMNS, write_grad_records

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def records(module_norm: np.ndarray, phase: str = "train", first_step: int = 1, modules=MODULES) -> dict:
    """Rows for a (steps x layers x modules) array of module norms, A and B splitting each as 0.6 : 0.8,
    so sqrt(A^2 + B^2) gives it back."""
    t, l, m = module_norm.shape
    idx = np.indices((t, l, m, 2)).reshape(4, -1)
    part = np.where(idx[3] == 0, 0.6, 0.8)
    n = idx.shape[1]
    return {"phase": np.full(n, phase), "step": (idx[0] + first_step).astype(np.int32),
            "layer": idx[1].astype(np.int16), "module": np.array(modules)[idx[2]],
            "matrix": np.array(["A", "B"])[idx[3]], "norm": (module_norm[idx[0], idx[1], idx[2]] * part),
            "rank": np.full(n, 8, dtype=np.int16), "scaling": np.full(n, 2.0, dtype=np.float32)}


def concat(*parts: dict) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def loop_importance(cols: dict, phase: str, modules=None) -> np.ndarray:
    """The definition as a loop over rows (the implementation before it was vectorised)."""
    sq: dict[tuple, float] = {}
    for ph, step, layer, module, norm in zip(cols["phase"], cols["step"], cols["layer"], cols["module"], cols["norm"]):
        if ph == phase:
            key = (int(step), int(layer), str(module))
            sq[key] = sq.get(key, 0.0) + float(norm) ** 2
    steps = sorted({k[0] for k in sq})
    mat = np.zeros((len(steps), 1 + max(k[1] for k in sq)))
    for (step, layer, module), v in sq.items():
        if modules is None or module in modules:
            mat[steps.index(step), layer] += v ** 0.5
    return mat.mean(axis=0)


def test_known_answer_module_norm_is_recovered_and_summed():
    # module norm = layer weight * module weight, constant over 4 steps
    layer_w = np.array([1.0, 2.0, 3.0])
    mod_w = np.arange(1, 8, dtype=float)
    cube = np.broadcast_to(layer_w[None, :, None] * mod_w[None, None, :], (4, 3, 7)).copy()
    g = imp.grad_cube(records(cube), "train")
    assert g.modules == MODULES and g.steps.tolist() == [1, 2, 3, 4] and g.num_layers == 3
    np.testing.assert_allclose(g.cube, cube, rtol=1e-12)
    np.testing.assert_allclose(g.layer_importance(), layer_w * 28, rtol=1e-12)  # 1 + ... + 7 = 28
    np.testing.assert_allclose(g.layer_importance({"q_proj", "down_proj"}), layer_w * 8, rtol=1e-12)
    assert g.step_layer().shape == (4, 3)
    assert g.module_totals() == pytest.approx({m: 6.0 * w for m, w in zip(MODULES, mod_w)}, rel=1e-12)
    np.testing.assert_allclose(imp.layer_importance(records(cube), "train"), layer_w * 28, rtol=1e-12)


def test_equals_the_row_loop_on_shuffled_multi_phase_records():
    rng = np.random.default_rng(0)
    train = records(rng.uniform(0, 2, (9, 5, 7)), "train", first_step=1)
    prof = records(rng.uniform(0, 2, (3, 5, 7)), "profile", first_step=1)
    cols = concat(prof, train)
    order = rng.permutation(cols["step"].size)
    cols = {k: v[order] for k, v in cols.items()}
    for phase in ("train", "profile"):
        for modules in (None, {"q_proj"}, {"gate_proj", "up_proj", "down_proj"}):
            np.testing.assert_allclose(imp.layer_importance(cols, phase, modules), loop_importance(cols, phase, modules),
                                       rtol=1e-12)


def test_sparse_steps_missing_cells_and_unknown_modules():
    rng = np.random.default_rng(1)
    cols = records(rng.uniform(0.1, 1, (3, 4, 2)), modules=["up_proj", "lm_head"])
    cols["step"] = np.array([5, 1000, 10**6])[cols["step"] - 1].astype(np.int64)  # far apart: the sort path
    keep = ~((cols["layer"] == 2) & (cols["module"] == "up_proj"))  # a layer with one module unrecorded
    cols = {k: v[keep] for k, v in cols.items()}
    g = imp.grad_cube(cols, "train")
    assert g.steps.tolist() == [5, 1000, 10**6]
    assert g.modules == ["up_proj", "lm_head"]  # projections first, then others
    assert (g.cube[:, 2, 0] == 0).all()
    np.testing.assert_allclose(g.layer_importance(), loop_importance(cols, "train"), rtol=1e-12)
    assert imp.grad_cube(cols, "profile") is None
    with pytest.raises(ValueError, match="no lora gradient records for phase 'profile'"):
        imp.layer_importance(cols, "profile")


def test_steps_with_gaps_keep_only_recorded_steps():
    rng = np.random.default_rng(6)
    cols = records(rng.uniform(0.1, 1, (4, 3, 7)))
    cols["step"] = np.array([2, 3, 7, 9])[cols["step"] - 1]  # dense range 2..9, four of its steps recorded
    g = imp.grad_cube(cols, "train")
    assert g.steps.tolist() == [2, 3, 7, 9] and g.cube.shape == (4, 3, 7)
    np.testing.assert_allclose(g.layer_importance(), loop_importance(cols, "train"), rtol=1e-12)


def test_read_cube_equals_the_in_memory_cube(tmp_path):
    rng = np.random.default_rng(2)
    cols = concat(records(rng.uniform(0, 1, (2, 6, 7)), "profile"), records(rng.uniform(0, 1, (11, 6, 7)), "train"))
    path = tmp_path / "grad_norms.parquet"
    write_grad_records(path, cols)
    for phase in ("train", "profile"):
        a, b = imp.read_cube(path, phase), imp.grad_cube(cols, phase)
        assert a.modules == b.modules and a.steps.tolist() == b.steps.tolist()
        np.testing.assert_array_equal(a.cube, b.cube)
    assert imp.read_cube(path, "eval") is None


def test_read_cube_across_row_groups_with_their_own_dictionaries(tmp_path):
    """Row groups written apart carry different dictionaries (here: different module sets)."""
    rng = np.random.default_rng(3)
    a = records(rng.uniform(0, 1, (2, 3, 2)), "train", 1, modules=["v_proj", "q_proj"])
    b = records(rng.uniform(0, 1, (2, 3, 2)), "train", 3, modules=["down_proj", "q_proj"])
    path = tmp_path / "g.parquet"
    with pq.ParquetWriter(path, pa.table({c: a[c] for c in GRAD_COLUMNS}).schema) as w:
        for part in (a, b):
            w.write_table(pa.table({c: part[c] for c in GRAD_COLUMNS}))
    got = imp.read_cube(path, "train")
    both = concat(a, b)
    assert got.modules == ["q_proj", "v_proj", "down_proj"]
    np.testing.assert_array_equal(got.cube, imp.grad_cube(both, "train").cube)
    np.testing.assert_allclose(got.layer_importance(), loop_importance(both, "train"), rtol=1e-12)


def test_step_norms_is_one_step_of_the_cube():
    rng = np.random.default_rng(4)
    cube = rng.uniform(0, 1, (1, 4, 7))
    cols = records(cube)
    order, module_idx = imp.encode_modules(cols["module"])
    assert order == MODULES
    layer_norms, module_norms = imp.step_norms(cols["norm"], cols["layer"], module_idx, 4, 7)
    np.testing.assert_allclose(layer_norms, cube[0].sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(module_norms, cube[0].sum(axis=0), rtol=1e-12)
    # A = 3, B = 4 for one module: its norm is 5
    ln, mn = imp.step_norms(np.array([3.0, 4.0]), np.array([1, 1]), np.array([0, 0]), 2, 1)
    assert ln.tolist() == [0.0, 5.0] and mn.tolist() == [5.0] and math.isclose(ln.sum(), 5.0)


def test_importance_does_not_import_torch():
    code = "import sys, grpo_rank.allocation.importance; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def full_weight_rows(w_norm: np.ndarray, phase: str = "train") -> dict:
    """One "W" row per (step, layer, module): the frozen weight's gradient norm, as the profiler writes it."""
    t, l, m = w_norm.shape
    idx = np.indices((t, l, m)).reshape(3, -1)
    n = idx.shape[1]
    return {"phase": np.full(n, phase), "step": (idx[0] + 1).astype(np.int32), "layer": idx[1].astype(np.int16),
            "module": np.array(MODULES)[idx[2]], "matrix": np.full(n, "W"), "norm": w_norm.reshape(-1),
            "rank": np.full(n, 8, dtype=np.int16), "scaling": np.full(n, 2.0, dtype=np.float32)}


@pytest.mark.parametrize("in_file", [False, True])
def test_the_two_signals_read_their_own_rows(tmp_path, in_file):
    """LoRA rows (A, B) and full-weight rows (W) of the same steps never mix: each signal's cube is the
    one its rows alone give, in memory and from parquet; a file without W rows has no full-weight cube."""
    rng = np.random.default_rng(8)
    lora_norm, w_norm = rng.uniform(0.1, 1, (3, 4, 7)), rng.uniform(5, 9, (3, 4, 7))
    cols = concat(records(lora_norm), full_weight_rows(w_norm))
    lora_only = records(lora_norm)

    def cube(c, signal):
        if not in_file:
            return imp.grad_cube(c, "train", signal)
        path = tmp_path / f"{signal}-{len(c['norm'])}.parquet"
        write_grad_records(path, c)
        return imp.read_cube(path, "train", signal)

    np.testing.assert_allclose(cube(cols, "lora").cube, lora_norm, rtol=1e-6)
    np.testing.assert_allclose(cube(cols, "full_weight").cube, w_norm, rtol=1e-6)
    np.testing.assert_allclose(imp.layer_importance(cols, "train", signal="full_weight"), w_norm.sum(2).mean(0),
                               rtol=1e-6)
    np.testing.assert_array_equal(cube(lora_only, "lora").cube, cube(cols, "lora").cube)
    assert cube(lora_only, "full_weight") is None


def test_scaling_normalisation_divides_out_exactly_the_predicted_factor():
    r0, ranks = 8, np.array([4, 8, 16, 32])
    for mode, slope in imp.SCALING_SLOPES.items():
        s = imp.lora_scaling(mode, 16.0, r0, ranks)
        raw = 3.0 * s * np.sqrt(ranks)  # a norm that only the scaling moves
        assert np.polyfit(np.log(ranks), np.log(raw), 1)[0] == pytest.approx(slope)
        np.testing.assert_allclose(imp.scaling_normalised(raw, mode, 16.0, r0, ranks),
                                   3.0 * imp.lora_scaling(mode, 16.0, r0, r0) * np.sqrt(r0))


def test_same_at_uniform_rank_lists_exactly_the_modes_with_equal_scaling_at_lora_r():
    """At rank lora.r on every layer two alpha modes build the same model iff their scalings agree there;
    SAME_AT_UNIFORM_RANK (shared profile key, shared report reference) must name those pairs and no other."""
    alpha, r = 16.0, 8
    at_r = {m: float(imp.lora_scaling(m, alpha, r, r)) for m in imp.ALPHA_MODES}
    equal = {(a, b) for a in at_r for b in at_r if a != b and math.isclose(at_r[a], at_r[b])}
    listed = set(imp.SAME_AT_UNIFORM_RANK.items())
    assert listed and listed <= equal and all((b, a) in listed or (a, b) in listed for a, b in equal)
    assert all(imp.lora_scaling(m, alpha, r, 12) != imp.lora_scaling(to, alpha, r, 12) for m, to in listed)
