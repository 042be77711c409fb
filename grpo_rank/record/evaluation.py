"""The record of a finished job evaluated again (`python -m grpo_rank.evaluate`), beside the job's own.

    <job dir>/evaluations/<name>/eval.json       EvaluationRecord: which job and adapter, the settings, EvalSummary
    <job dir>/evaluations/<name>/outcomes.jsonl  every question, as eval_outcomes.jsonl has them

`<name>` says the split, n and scoring and ends in a hash of every evaluation setting and the adapter's
sha256, so another setting gets a folder of its own and the same one is replaced, never duplicated.
The job's result.json and eval_outcomes.jsonl are never written by it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from grpo_rank.record.files import EVALUATIONS, write_json
from grpo_rank.record.result import AdapterInfo, EvalSummary, JobIdentity, RecordError, RuntimeInfo, build

EVAL_RECORD = "eval.json"
EVAL_OUTCOMES = "outcomes.jsonl"
EVAL_SCHEMA_VERSION = 1


@dataclass
class EvaluationRecord:
    job: JobIdentity  # the evaluated job, as its result.json names it
    job_dir: str
    adapter: AdapterInfo | None  # None: a job that trained nothing (the base model)
    settings: dict  # every eval.* setting used, overrides applied
    overrides: list[str]  # as given on the command line
    eval: EvalSummary
    runtime: RuntimeInfo
    created: str  # ISO 8601, UTC
    timings: dict[str, float] = field(default_factory=dict)
    schema_version: int = EVAL_SCHEMA_VERSION


def evaluations_dir(job_dir: Path) -> Path:
    return Path(job_dir) / EVALUATIONS


def write_record(folder: Path, record: EvaluationRecord) -> Path:
    path = Path(folder) / EVAL_RECORD
    write_json(path, dataclasses.asdict(record))
    return path


def read_record(folder: Path) -> EvaluationRecord:
    """One evaluation's record; RecordError (one line) when it is missing, unreadable or of another version."""
    path = Path(folder) / EVAL_RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable ({type(exc).__name__}); evaluate the job again") from None
    if not isinstance(data, dict) or data.get("schema_version") != EVAL_SCHEMA_VERSION:
        raise RecordError(f"{path}: not an evaluation record of version {EVAL_SCHEMA_VERSION}; evaluate the job again")
    return build(EvaluationRecord, data, str(path))
