"""Checkpoint and resume of one training phase, by a Trainer callback (no Trainer subclass).

transformers' checkpoint folder `checkpoint-N/` holds the LoRA adapter, optimizer, scheduler, RNG states
and trainer state. `SaveRecords.on_save` adds ours: the profiler's gradient rows and TRL's log rows up
to step N, then `grpo_rank_state.json`, written last, which marks the checkpoint complete and names the
phase it belongs to (its `profile_key`). `latest()` takes the newest complete checkpoint of the same
phase, so a job killed mid-save resumes from the one before (the Trainer keeps two), and a folder left
by another config is never resumed from.

On resume the Trainer restores its part and skips the batches already trained on; `restore()` puts our
records back, so a resumed phase's records hold every step exactly once and equal an uninterrupted run's.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from grpo_rank.record.files import atomic_write_bytes, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

STATE = "grpo_rank_state.json"
NORMS = "grad_norms_so_far.npz"
LOGS = "train_log_so_far.jsonl"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class SaveRecords(TrainerCallback):
    """Writes the records so far into the checkpoint folder the Trainer has just saved."""

    def __init__(self, profiler, log_rows: list[dict], fingerprint: str, phase: str):
        self.profiler, self.log_rows, self.fingerprint, self.phase = profiler, log_rows, fingerprint, phase

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # the records are the same on every rank; rank 0 writes them
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.profiler.flush()
        buf = io.BytesIO()
        norms = np.stack(self.profiler.norms) if self.profiler.norms else np.zeros((0, len(self.profiler.meta)))
        # the per-step ranks of an adaptive strategy (strategy=adalora) travel with the norms
        ranks = np.stack(self.profiler.rank_rows) if self.profiler.rank_rows else np.zeros((0, 0), dtype=np.int16)
        np.savez(buf, steps=np.asarray(self.profiler.steps, dtype=np.int64), norms=norms, ranks=ranks)
        atomic_write_bytes(folder / NORMS, buf.getvalue())
        write_jsonl(folder / LOGS, self.log_rows)
        # last: its presence says everything above (and the Trainer's files before it) is complete
        write_json(folder / STATE, {"step": state.global_step, "phase": self.phase, "fingerprint": self.fingerprint})


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder, newest first."""
    if not Path(output_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found, reverse=True)


def _complete(folder: Path, step: int, fingerprint: str) -> bool:
    try:
        state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return False
    return state.get("step") == step and state.get("fingerprint") == fingerprint and (folder / NORMS).exists()


def latest(output_dir: Path, fingerprint: str) -> Path | None:
    """The newest complete checkpoint of this phase; newer incomplete or foreign folders are removed, so
    the Trainer's own rotation never counts them."""
    for step, folder in checkpoints(output_dir):
        if _complete(folder, step, fingerprint):
            return folder
        log.warning("ignoring checkpoint %s: incomplete, or written by another config", folder)
        shutil.rmtree(folder, ignore_errors=True)
    return None


def restore(folder: Path, profiler) -> tuple[int, list[dict]]:
    """Loads the records saved with a checkpoint into `profiler`; returns (step, log rows so far)."""
    state = json.loads((folder / STATE).read_text())
    with np.load(folder / NORMS) as saved:
        profiler.steps = saved["steps"].astype(int).tolist()
        profiler.norms = list(saved["norms"])
        profiler.rank_rows = list(saved["ranks"]) if "ranks" in saved.files else []
    return int(state["step"]), read_jsonl(folder / LOGS)
