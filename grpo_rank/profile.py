"""The importance profile S(l): a short GRPO phase at uniform rank on the same model, task and seed,
whose per-layer LoRA gradient norms give S(l) (importance.py), or the recorded gradients of a finished
job (`profile.from_run=<job dir>`).

The profile's identity is `profile_key`: a hash of everything that determines it, recorded with the
results so that two jobs can be checked to have used the same profile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import RunConfig
from .importance import importance
from .records import load_job


def profile_key(cfg: RunConfig) -> str:
    g = asdict(cfg.grpo)
    g.pop("logging_steps")
    payload = {"model": asdict(cfg.model), "task": asdict(cfg.task), "lora": asdict(cfg.lora), "grpo": g,
               "steps": cfg.profile.steps, "seed": cfg.seed, "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def from_run(path: str | Path) -> tuple[list[float], dict]:
    """Importance from a finished job's records: its profile phase if it had one, else its training
    (which is a valid profile only when that job trained at uniform rank)."""
    job = load_job(Path(path))
    grads = job.grads
    if grads is None:
        raise FileNotFoundError(f"profile.from_run={str(path)!r} has no gradient records (grad_norms.parquet)")
    phases = set(np.unique(grads["phase"]).tolist())
    if "profile" in phases:
        phase = "profile"
    elif job.result.get("job", {}).get("strategy") == "uniform":
        phase = "train"
    else:
        raise ValueError(f"profile.from_run={str(path)!r}: a {job.result['job']['strategy']} job's training "
                         "gradients are no uniform-rank profile; use a uniform job or one that profiled")
    imp = importance(grads, phase).tolist()
    steps = int(len(np.unique(grads["step"][grads["phase"] == phase])))
    info = {"source": "from_run", "path": str(Path(path).resolve()), "phase": phase, "steps": steps,
            "hash": job.result.get("profile", {}) and job.result["profile"].get("hash")}
    return imp, info
