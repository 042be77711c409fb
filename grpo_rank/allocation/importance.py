"""Layer importance from LoRA gradient norms: the one implementation of the per-(step, layer, module)
module norms and their sums, used by the gradient-norm profiler (per step, while training), the
profile (S(l) from recorded gradients) and the report (one job's gradients at a time).

The study's Eq. 2: S(l) = mean over optimizer steps of the sum, over layer l's LoRA modules, of each
module's gradient L2 norm. A module's norm is the norm over all its LoRA parameters,
sqrt(||grad A||^2 + ||grad B||^2); the records keep A and B apart so other choices stay possible.
The same reduction on the full-weight rows (matrix "W": ||dL/dW|| of each frozen projection, recorded
by gradnorm.FullWeightGrads) gives the rank-invariant S(l) of `profile.signal=full_weight`.

    from grpo_rank.allocation.importance import read_cube
    cube = read_cube("multirun/.../0_uniform_full_s0/grad_norms.parquet", "train")
    cube.layer_importance()            # S(l), one value per layer
    cube.step_layer({"q_proj"})        # steps x layers, q_proj only

How: a numpy group-by. Every record gets a flat cell index (step, layer, module) and
`np.bincount(cell, weights=norm**2)` sums A's and B's squares in one pass (O(rows), no sort); the
square root gives a dense steps x layers x modules cube, and every reduction is an axis sum of it.
numpy rather than pyarrow compute, DuckDB or Polars: the keys are small dense integers, so a
bincount into a dense cube is the whole group-by, and it adds no dependency. pyarrow is used only to
read: the four needed columns, with `module` and `phase` dictionary-encoded, so no Python string is
made per row (a Python string per row and a loop over rows cost ~1 s per paper-length job, measured).
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
# what an importance is measured on (profile.signal) -> the record rows' `matrix` values it reads
SIGNALS = {
    "lora": ("A", "B"),  # the study's Eq. 2: LoRA gradients, which move with rank and alpha (the artefact)
    "full_weight": ("W",),  # ||dL/dW|| of the frozen base weight: the same whatever the LoRA rank or alpha
}
FULL_WEIGHT = "W"
# lora.alpha_mode -> the LoRA scaling s(l) it gives, and the log-log slope of a module's gradient norm
# against its rank that this scaling alone produces at init: with B = 0, ||grad B|| ~ s(l) * sqrt(r(l))
ALPHA_MODES = {"fixed": "alpha / r(l), PEFT's convention (the study states none): slope -1/2",
               "rslora": "alpha / sqrt(r(l)) (rsLoRA): slope 0",
               "per_rank": "alpha / lora.r on every layer (alpha grows with r(l)): slope +1/2"}
SCALING_SLOPES = {"fixed": -0.5, "rslora": 0.0, "per_rank": 0.5}
# lora.alpha_mode -> the mode that builds the same model when every layer has rank lora.r (per_rank's
# alpha * r(l) / lora.r is then alpha, fixed's scaling): the two share a uniform run's profile key and its
# report reference, so a study need not train both
SAME_AT_UNIFORM_RANK = {"per_rank": "fixed"}


def lora_scaling(alpha_mode: str, alpha: float, r_uniform: int, rank) -> np.ndarray:
    """s(l) of a module at LoRA rank `rank` (scalar or array) under `alpha_mode`, as PEFT sets it."""
    rank = np.asarray(rank, dtype=np.float64)
    if alpha_mode == "fixed":
        return alpha / rank
    if alpha_mode == "rslora":
        return alpha / np.sqrt(rank)
    if alpha_mode == "per_rank":
        return np.full_like(rank, alpha / r_uniform)
    raise KeyError(alpha_mode)


def scaling_normalised(norm, alpha_mode: str, alpha: float, r_uniform: int, rank) -> np.ndarray:
    """A module's gradient norm with the scaling artefact divided out: norm / (s(l) * sqrt(r(l))), times
    the uniform run's s * sqrt(r) so that a uniform run's norms are unchanged."""
    ref = lora_scaling(alpha_mode, alpha, r_uniform, r_uniform) * np.sqrt(r_uniform)
    return np.asarray(norm, dtype=np.float64) * ref / (lora_scaling(alpha_mode, alpha, r_uniform, rank) * np.sqrt(rank))


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


def grad_cube(columns: dict[str, np.ndarray], phase: str, signal: str = "lora") -> GradCube | None:
    """The GradCube of one phase and signal (SIGNALS) of gradient records in columnar form
    (records.read_grad_records: phase, step, layer, module, matrix, norm, rank, scaling); None when
    there are no such rows."""
    sel = (np.asarray(columns["phase"]) == phase) & np.isin(np.asarray(columns["matrix"]).astype(str), SIGNALS[signal])
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


def _has_full_weight(meta) -> bool:
    """Whether any row may be a full-weight ("W") row, from the `matrix` column's statistics alone
    ("A" < "B" < "W": a file of LoRA rows only has max "B")."""
    if "matrix" not in meta.schema.names:
        return False
    col = meta.schema.names.index("matrix")
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(col).statistics
        if st is None or not st.has_min_max or st.max >= FULL_WEIGHT:
            return True
    return False


def read_cube(path: Path | str, phase: str, signal: str = "lora") -> GradCube | None:
    """The GradCube of one phase and signal (SIGNALS) of a grad_norms.parquet, reading only the columns
    it needs; None when the file has no such rows. Nothing but the cube outlives the call."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, read_dictionary=["phase", "module", "matrix"])
    found = _phase_in_row_groups(pf.metadata, phase)
    if found == "none":
        return None
    # files without full-weight rows (most) need no matrix column for the LoRA signal
    by_matrix = signal != "lora" or _has_full_weight(pf.metadata)
    if signal != "lora" and not _has_full_weight(pf.metadata):
        return None
    # a file of one phase (a job's training records) needs no phase column: its statistics said so
    wanted = [c for c in READ_COLUMNS if c != "phase" or found == "some"] + (["matrix"] if by_matrix else [])
    table = pf.read(columns=wanted)
    codes, names = _dictionary_codes(table.column("module"))
    step, layer, norm = (table.column(c).to_numpy() for c in ("step", "layer", "norm"))
    sel = np.ones(step.size, dtype=bool)
    if found == "some":
        phase_codes, phase_names = _dictionary_codes(table.column("phase"))
        if phase not in phase_names:
            return None
        sel &= phase_codes == phase_names.index(phase)
    if by_matrix:
        m_codes, m_names = _dictionary_codes(table.column("matrix"))
        sel &= np.isin(m_codes, [i for i, n in enumerate(m_names) if n in SIGNALS[signal]])
    if not sel.all():
        step, layer, codes, norm = step[sel], layer[sel], codes[sel], norm[sel]
    return _cube(step, layer, codes, names, norm)


def layer_importance(columns: dict[str, np.ndarray], phase: str = "train",
                     modules: Sequence[str] | set[str] | None = None, signal: str = "lora") -> np.ndarray:
    """S(l), Eq. 2, of one phase of gradient records in columnar form, on the LoRA gradients or
    (signal="full_weight") on the frozen weights' gradients; ValueError when there are none."""
    cube = grad_cube(columns, phase, signal)
    if cube is None:
        raise ValueError(f"no {signal} gradient records for phase {phase!r}")
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
