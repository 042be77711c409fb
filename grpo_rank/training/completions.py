"""Completions, watched: every `tracking.completions_every` training steps, the completions that step
sampled, each with its prompt, the gold answer and every reward's value, appended to the job folder's
completions.jsonl (the record) and mirrored to W&B as a table.

    python -m grpo_rank.run tracking.completions_every=1      # every step; 0 logs none (default 10)

One row per completion: `step`, `prompt` (the question: the prompt's last message), `answer` (gold),
`completion`, `rewards` ({reward name: value}, as the reward function returned it) and `reward`, their
sum weighted by `grpo.rewards` (TRL's reward of that completion).

TRL's GRPOTrainer has a completion table of its own (`log_completions`), but it logs to the global
`wandb.run` through `report_to`, which this project leaves off so that the run identity is ours
(pipeline/tracking.py), and it keeps the batch in a private buffer. So the rows are taken where TRL hands
them out in public: each reward function is wrapped to note the prompts, completions and values it is
called with (TRL calls every reward function on the same generation batch, with the `trainer_state` it
was sampled at), and a TrainerCallback writes the step's rows when the optimizer step ends. The wrappers
return the rewards unchanged and draw no random numbers, so a job's results are the same with or
without them. Only the job's own training phase is watched (not a profile). Of a multi-process job,
rank 0 writes the completions it sampled itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from transformers import TrainerCallback

from grpo_rank.objective.rewards import completion_text
from grpo_rank.record.files import append_jsonl, read_jsonl, write_jsonl
from grpo_rank.runtime import distributed

COLUMNS = ("step", "prompt", "answer", "completion")  # then one column per reward, then `reward`


class CompletionLog:
    """Wraps the reward functions (`wrap`) and writes each watched step's rows (`callback`)."""

    def __init__(self, path: Path, every: int, weights: Mapping[str, float], on_table: Callable | None = None):
        self.path, self.every, self.weights, self.on_table = Path(path), every, dict(weights), on_table
        self.names = list(weights)
        self.batches: list[dict] = []  # the generation batches sampled for the step being watched

    def start(self, resumed_from: int | None) -> None:
        """A phase resumed from step k keeps the rows up to k; a fresh one starts an empty file."""
        if distributed.is_main():
            keep = [r for r in read_jsonl(self.path) if resumed_from and r.get("step", 0) <= resumed_from]
            write_jsonl(self.path, keep)

    def wrap(self, funcs: Sequence[Callable]) -> list[Callable]:
        """The reward functions in `grpo.rewards` order (the same order as `weights`), watched."""
        return [self._wrap(name, fn) for name, fn in zip(self.names, funcs)]

    def _wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)  # TRL names its reward columns and metrics by __name__
        def watched(*args, **kwargs):
            out = fn(*args, **kwargs)
            state = kwargs.get("trainer_state")
            step = state.global_step + 1 if state is not None else None  # sampled for the step now running
            if step is not None and step % self.every == 0:
                self._note(step, name, kwargs, out)
            return out

        return watched

    def _note(self, step: int, name: str, kwargs: dict, values) -> None:
        completions = kwargs.get("completions")
        self.batches = [b for b in self.batches if b["step"] == step]
        # every reward function gets the very same list for one generation batch
        batch = next((b for b in self.batches if b["completions"] is completions), None)
        if batch is None:
            batch = {"step": step, "completions": completions, "prompts": kwargs.get("prompts"),
                     "answers": kwargs.get("answer"), "values": {}}
            self.batches.append(batch)
        batch["values"][name] = [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]

    def rows(self, step: int) -> list[dict]:
        out = []
        for b in self.batches:
            if b["step"] != step:
                continue
            for i, completion in enumerate(b["completions"] or []):
                rewards = {n: b["values"][n][i] for n in self.names if n in b["values"]}
                prompt = b["prompts"][i] if b["prompts"] is not None else ""
                answer = b["answers"][i] if b["answers"] is not None else None
                out.append({"step": step, "prompt": completion_text(prompt), "answer": answer,
                            "completion": completion_text(completion), "rewards": rewards,
                            "reward": sum(self.weights[n] * v for n, v in rewards.items() if v is not None)})
        return out

    def table(self, rows: list[dict]) -> tuple[list[str], list[list]]:
        """The rows as W&B table columns and cells (one type per column: a missing value is NaN)."""
        columns = [*COLUMNS, *self.names, "reward"]
        cells = [[r["step"], r["prompt"], "" if r["answer"] is None else str(r["answer"]), r["completion"],
                  *[r["rewards"].get(n) if r["rewards"].get(n) is not None else math.nan for n in self.names],
                  r["reward"]] for r in rows]
        return columns, cells

    def callback(self) -> TrainerCallback:
        log = self

        class _WriteCompletions(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                step = state.global_step
                if step % log.every:
                    return
                rows = log.rows(step)
                log.batches = []
                if not rows or not state.is_world_process_zero:
                    return
                for row in rows:
                    append_jsonl(log.path, row)
                if log.on_table is not None:
                    log.on_table(step, *log.table(rows))

        return _WriteCompletions()
