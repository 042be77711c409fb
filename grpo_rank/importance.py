"""Layer importance from LoRA gradient norms: the one implementation of the per-(step, layer, module)
module norms and their sums, used by the gradient-norm profiler (per step, while training), the
profile (S(l) from recorded gradients) and the report (one job's gradients at a time).

The study's Eq. 2: S(l) = mean over optimizer steps of the sum, over layer l's LoRA modules, of each
module's gradient L2 norm. A module's norm is the norm over all its LoRA parameters,
sqrt(||grad A||^2 + ||grad B||^2); the records keep A and B apart so other choices stay possible.

    from grpo_rank.importance import read_cube
    cube = read_cube("multirun/.../0_uniform_full_s0/grad_norms.parquet", "train")
    cube.layer_importance()            # S(l), one value per layer
    cube.step_layer({"q_proj"})        # steps x layers, q_proj only

How: a numpy group-by. Every record gets a flat cell index (step, layer, module) and
`np.bincount(cell, weights=norm**2)` sums A's and B's squares in one pass (O(rows), no sort); the
square root gives a dense steps x layers x modules cube, and every reduction is an axis sum of it.
numpy rather than pyarrow compute, DuckDB or Polars: the keys are small dense integers, so a
bincount into a dense cube is the whole group-by, and it adds no dependency. pyarrow is used only to
read: the four needed columns, with `module` and `phase` dictionary-encoded, so no Python string is
made per row (that, and a Python loop over rows, cost the old report ~1 s per paper-length job).
No torch here (tests/test_importance.py checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the report's and W&B's column order; other module names follow, sorted
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
READ_COLUMNS = ("phase", "step", "layer", "module", "norm")


@dataclass(frozen=True)
class GradCube:
    """One phase of one job's gradients: `cube[t, l, m]` is module `modules[m]`'s norm
    sqrt(||grad A||^2 + ||grad B||^2) in layer l at optimizer step `steps[t]` (0 where not recorded)."""

    steps: np.ndarray  # (T,) recorded step numbers, ascending
    modules: list[str]  # (M,) projection types, PROJECTIONS order first
    cube: np.ndarray  # (T, L, M) float64

    @property
    def num_layers(self) -> int:
        return self.cube.shape[1]

    def _columns(self, modules: Sequence[str] | set[str] | None) -> list[int]:
        return [i for i, m in enumerate(self.modules) if modules is None or m in modules]

    def step_layer(self, modules: Sequence[str] | set[str] | None = None) -> np.ndarray:
        """(T, L): per step, each layer's sum of module norms; `modules` restricts the sum."""
        return self.cube[:, :, self._columns(modules)].sum(axis=2)

    def layer_importance(self, modules: Sequence[str] | set[str] | None = None) -> np.ndarray:
        """S(l), Eq. 2: `step_layer(modules)` averaged over steps."""
        return self.step_layer(modules).mean(axis=0)

    def module_totals(self) -> dict[str, float]:
        """Per projection type: its norm summed over layers, averaged over steps."""
        per = self.cube.sum(axis=1).mean(axis=0)
        return {m: float(v) for m, v in zip(self.modules, per)}


def module_order(names) -> list[str]:
    """Module names in report order: the projections as in PROJECTIONS, then any others sorted."""
    present = set(names)
    return [m for m in PROJECTIONS if m in present] + sorted(present - set(PROJECTIONS))


def encode_modules(names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(modules in `module_order`, each name's index into them): what `step_norms` takes per adapter."""
    uniq, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    order = module_order(uniq.tolist())
    lut = np.array([order.index(u) for u in uniq.tolist()], dtype=np.int64)
    return order, lut[inverse.ravel()]


def _cube(step: np.ndarray, layer: np.ndarray, codes: np.ndarray, names: list[str], norm: np.ndarray) -> GradCube | None:
    """The group-by: (step, layer, module code, norm) rows -> GradCube; `names[code]` names the code."""
    if step.size == 0:
        return None
    # keep only the modules that occur, in report order
    used = np.flatnonzero(np.bincount(codes, minlength=len(names)))
    modules = module_order([names[i] for i in used])
    lut = np.zeros(len(names), dtype=np.int64)
    lut[used] = [modules.index(names[i]) for i in used]
    if not np.array_equal(lut, np.arange(len(names))):  # the profiler writes modules in report order already
        codes = lut[codes]
    n_layers, n_mod = int(layer.max()) + 1, len(modules)
    lo, hi = int(step.min()), int(step.max())
    sparse = hi - lo > 4 * step.size  # far-apart step numbers: number them by a sort, not a huge range
    if sparse:
        steps, offset = np.unique(step, return_inverse=True)
        offset, n_dense = offset.ravel(), steps.size
    else:  # cells for every step number from lo to hi; those never recorded are dropped below
        offset, n_dense = np.asarray(step, dtype=np.int64) - lo, hi - lo + 1
    cell = (offset * n_layers + layer) * n_mod + codes
    # bincount adds in row order, so A's square then B's, as a running sum would
    sums = np.bincount(cell, weights=np.square(norm, dtype=np.float64), minlength=n_dense * n_layers * n_mod)
    cube = np.sqrt(sums).reshape(n_dense, n_layers, n_mod)
    if not sparse:
        recorded = np.bincount(offset, minlength=n_dense) > 0
        steps = lo + np.flatnonzero(recorded)
        if not recorded.all():
            cube = cube[recorded]
    return GradCube(steps=steps, modules=modules, cube=cube)


def grad_cube(columns: dict[str, np.ndarray], phase: str) -> GradCube | None:
    """The GradCube of one phase of gradient records in columnar form (records.read_grad_records:
    phase, step, layer, module, matrix, norm, rank, scaling); None when the phase has no rows."""
    sel = np.asarray(columns["phase"]) == phase
    if not sel.any():
        return None
    names, codes = np.unique(np.asarray(columns["module"])[sel].astype(str), return_inverse=True)
    return _cube(np.asarray(columns["step"])[sel], np.asarray(columns["layer"])[sel], codes.ravel(),
                 names.tolist(), np.asarray(columns["norm"])[sel])


def _dictionary_codes(column) -> tuple[np.ndarray, list[str]]:
    """A dictionary-encoded pyarrow ChunkedArray as (codes into one name list, the names)."""
    if column.num_chunks == 1:  # one row group: its own dictionary is the name list
        chunk = column.chunk(0)
        return chunk.indices.to_numpy(zero_copy_only=False), chunk.dictionary.to_pylist()
    where: dict[str, int] = {}
    parts = []
    for chunk in column.chunks:
        local = chunk.dictionary.to_pylist()
        lut = np.array([where.setdefault(n, len(where)) for n in local], dtype=np.int64)
        parts.append(lut[chunk.indices.to_numpy(zero_copy_only=False)])
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), list(where)


def _phase_in_row_groups(meta, phase: str) -> str:
    """'all', 'none' or 'some': whether the rows are of `phase`, from the row groups' min/max statistics
    alone ('some' when a group has none, or mixes phases)."""
    col = meta.schema.names.index("phase")
    seen = set()
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows == 0:
            continue
        st = group.column(col).statistics
        if st is None or not st.has_min_max:
            return "some"
        seen.add("all" if st.min == st.max == phase else "none" if not st.min <= phase <= st.max else "some")
    if not seen:
        return "none"
    return seen.pop() if len(seen) == 1 else "some"


def read_cube(path: Path | str, phase: str) -> GradCube | None:
    """The GradCube of one phase of a grad_norms.parquet, reading only the columns it needs; None when
    the file has no rows of that phase. Nothing but the cube outlives the call."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, read_dictionary=["phase", "module"])
    found = _phase_in_row_groups(pf.metadata, phase)
    if found == "none":
        return None
    # a file of one phase (a job's training records) needs no phase column: its statistics said so
    table = pf.read(columns=[c for c in READ_COLUMNS if c != "phase" or found == "some"])
    codes, names = _dictionary_codes(table.column("module"))
    step, layer, norm = (table.column(c).to_numpy() for c in ("step", "layer", "norm"))
    if found == "some":
        phase_codes, phase_names = _dictionary_codes(table.column("phase"))
        if phase not in phase_names:
            return None
        sel = phase_codes == phase_names.index(phase)
        step, layer, codes, norm = step[sel], layer[sel], codes[sel], norm[sel]
    return _cube(step, layer, codes, names, norm)


def layer_importance(columns: dict[str, np.ndarray], phase: str = "train",
                     modules: Sequence[str] | set[str] | None = None) -> np.ndarray:
    """S(l), Eq. 2, of one phase of gradient records in columnar form; ValueError when it has none."""
    cube = grad_cube(columns, phase)
    if cube is None:
        raise ValueError(f"no gradient records for phase {phase!r}")
    return cube.layer_importance(modules)


def step_norms(norms_row: np.ndarray, layer_idx: np.ndarray, module_idx: np.ndarray, n_layers: int,
               n_modules: int) -> tuple[np.ndarray, np.ndarray]:
    """One optimizer step's A and B gradient norms (one entry per LoRA matrix, `layer_idx` and
    `module_idx` saying where each sits) -> (per-layer sum of module norms (n_layers,), per-module-type
    sum over layers (n_modules,)), module norm = sqrt(||grad A||^2 + ||grad B||^2) as everywhere."""
    cell = np.asarray(layer_idx, dtype=np.int64) * n_modules + np.asarray(module_idx, dtype=np.int64)
    sq = np.bincount(cell, weights=np.asarray(norms_row, dtype=np.float64) ** 2, minlength=n_layers * n_modules)
    mod = np.sqrt(sq).reshape(n_layers, n_modules)
    return mod.sum(axis=1), mod.sum(axis=0)
