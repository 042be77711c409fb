"""Layer importance from recorded LoRA gradient norms (numpy only, no torch).

The study's Eq. 2: S(l) = mean over optimizer steps of the sum, over layer l's LoRA modules, of each
module's gradient L2 norm. A module's norm here is the norm over all its LoRA parameters,
sqrt(||grad A||^2 + ||grad B||^2); the records keep A and B apart so other choices stay possible.
"""

from __future__ import annotations

import numpy as np


def module_norms(grads: dict[str, np.ndarray], phase: str = "train") -> dict[tuple[int, int, str], float]:
    """{(step, layer, module): sqrt(A^2 + B^2)} for one phase."""
    sel = grads["phase"] == phase
    out: dict[tuple[int, int, str], float] = {}
    for step, layer, module, norm in zip(grads["step"][sel], grads["layer"][sel], grads["module"][sel],
                                         grads["norm"][sel]):
        key = (int(step), int(layer), str(module))
        out[key] = out.get(key, 0.0) + float(norm) ** 2
    return {k: v ** 0.5 for k, v in out.items()}


def layer_step_matrix(grads: dict[str, np.ndarray], phase: str = "train",
                      modules: set[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, layers x steps matrix) of per-layer summed module norms; `modules` restricts the sum."""
    norms = module_norms(grads, phase)
    if not norms:
        raise ValueError(f"no gradient records for phase {phase!r}")
    steps = np.array(sorted({k[0] for k in norms}))
    n_layers = 1 + max(k[1] for k in norms)
    mat = np.zeros((len(steps), n_layers))
    index = {s: i for i, s in enumerate(steps)}
    for (step, layer, module), v in norms.items():
        if modules is None or module in modules:
            mat[index[step], layer] += v
    return steps, mat


def importance(grads: dict[str, np.ndarray], phase: str = "train", modules: set[str] | None = None) -> np.ndarray:
    """S(l), Eq. 2: per-layer summed module norms, averaged over steps."""
    _, mat = layer_step_matrix(grads, phase, modules)
    return mat.mean(axis=0)


def shares(values: np.ndarray) -> np.ndarray:
    """Normalise along the last axis so each row sums to 1 (zero rows stay zero)."""
    values = np.asarray(values, dtype=float)
    tot = values.sum(axis=-1, keepdims=True)
    return np.divide(values, tot, out=np.zeros_like(values), where=tot > 0)
