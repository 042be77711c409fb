"""What a job leaves in its folder, and how to read it back. The local files are the source of truth;
W&B only mirrors them.

A job folder (one Hydra job dir) holds:
- `result.json`: the typed job record, `grpo_rank.record.result.JobResult` (identity, resolved config,
  allocation, profile, parameter counts, training, evaluation, timings, status), written and read only
  by `result.write_result` / `result.read_result`.
- `grad_norms.parquet`: one row per (phase, step, layer, module, matrix) with the L2 norm of that LoRA
  matrix's gradient before clipping, the module's rank and LoRA scaling. phase is "train" or "profile".
- `reward_grads.parquet` (with `profile.per_reward=true`): the same columns plus `reward`: per step, the
  norm of each reward's share of the gradient and of the KL term's (reward "kl"), see reward_split.py.
- `train_log.jsonl`: TRL's per-step log (reward, reward_std, frac_reward_zero_std, loss, ...).
- `eval_outcomes.jsonl`: one line per evaluated question: index, gold, prediction, correct, parsed.
- `runs.jsonl`: one line per event of each launch of this job: started (with the step it resumed from,
  host and Slurm ids), then finished, skipped or failed. A relaunched or requeued job adds lines.
- `trainer_train/checkpoint-N/`: while the job trains, its last checkpoints (see checkpoint.py);
  removed once the job has finished.
- `adapter/`: the trained adapter in PEFT's format (weights, adapter_config.json whose rank_pattern holds the
  allocated ranks) and its model card README.md (training/adapter.py).
- `completions.jsonl`: every `tracking.completions_every` training steps, that step's sampled completions
  with their prompt, gold answer and each reward's value (training/completions.py).
- `evaluations/<name>/`: `python -m grpo_rank.evaluate` records (eval.json, outcomes.jsonl), one folder per
  evaluation setting; result.json and eval_outcomes.jsonl are never touched by it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

RESULT = "result.json"
GRADS = "grad_norms.parquet"
TRAIN_LOG = "train_log.jsonl"
OUTCOMES = "eval_outcomes.jsonl"
RUNS = "runs.jsonl"
ADAPTER = "adapter"  # folder: PEFT's adapter_config.json + adapter_model.safetensors, and the model card
ADAPTER_WEIGHTS = "adapter_model.safetensors"
COMPLETIONS = "completions.jsonl"
EVALUATIONS = "evaluations"

GRAD_COLUMNS = ("phase", "step", "layer", "module", "matrix", "norm", "rank", "scaling")
REWARD_GRADS = "reward_grads.parquet"  # profile.per_reward: the gradient columns plus `reward` (reward_split.py)
REWARD_COLUMNS = (*GRAD_COLUMNS, "reward")


@contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` (created if missing), across processes and, on a shared filesystem
    with working locks, across nodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename onto `path`: a job killed mid-write never leaves half a file. The one
    temp-then-rename of the package; every writer of a record goes through it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_dir(target: Path, build: Callable[[Path], object], aside: Path | None = None) -> None:
    """A folder built by `build(tmp)` in a temp folder beside `target`, then renamed into place: readers see
    all of it or nothing. An existing `target` is moved to `aside` (kept for a post-mortem) or removed."""
    import shutil
    import socket

    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        if target.exists():
            if aside is not None:
                os.replace(target, aside)
            else:
                shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_grad_records(path: Path, columns: dict[str, np.ndarray], names: tuple[str, ...] = GRAD_COLUMNS) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = set(names) - set(columns)
    if missing:
        raise ValueError(f"gradient records lack columns {sorted(missing)}")
    table = pa.table({c: columns[c] for c in names})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_grad_records(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_jsonable) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a job killed mid-append leaves half a last line: not a record
                break
            raise
    return rows


def replace_phase_rows(path: Path, phase: str, rows: list[dict]) -> None:
    """Rewrite a jsonl log so that its rows of `phase` are exactly `rows`: a resumed phase drops what a
    killed attempt logged after its checkpoint, so no step appears twice."""
    write_jsonl(path, [r for r in read_jsonl(path) if r.get("phase") != phase] + list(rows))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))
