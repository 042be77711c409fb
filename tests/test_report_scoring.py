"""The report names the scorer behind every accuracy (eval.scoring): runs.csv and table1.csv always, and
Table 1 of report.md as a column once a job used another scorer than the default `any`."""

from __future__ import annotations

import json

from grpo_rank.analysis import report as rp
from grpo_rank.analysis.report import tables
from grpo_rank.analysis.report.markdown import ReportData, render
from grpo_rank.record.files import RESULT
from tests.synthetic import make_sweep


def rescore(job_dir, scoring: str | None, legacy: bool = False) -> None:
    """The record as a job scored by `scoring` writes it; `legacy`: as a record from before EvalSummary.scoring,
    which says it only in the decoding settings."""
    path = job_dir / RESULT
    record = json.loads(path.read_text())
    record["eval"]["generation"]["scoring"] = scoring
    if legacy:
        record["eval"].pop("scoring", None)
    else:
        record["eval"]["scoring"] = scoring
    path.write_text(json.dumps(record))


def test_the_scorer_of_each_number(tmp_path):
    sweep = make_sweep(tmp_path / "multirun" / "d" / "t", jobs=6, steps=4, layers=4, modules=2, n_questions=10,
                       strategies=("uniform", "proportional", "random"))
    folders = sorted(p.parent for p in sweep.glob(f"*/{RESULT}"))
    jobs, _ = rp.load([sweep], progress=False)
    t1 = tables.table1_rows(jobs)
    assert {r["scoring"] for r in tables.run_rows(jobs)} == {"any"}  # synthetic records predate the field
    default_md = render(ReportData(jobs, [], [sweep], t1, [], [], [], []))
    assert "scored by" not in default_md  # the default scorer goes unsaid in report.md, like the default axes

    for folder in folders:
        rescore(folder, "math_verify")
    rescore(folders[0], "tagged", legacy=True)
    jobs, _ = rp.load([sweep], progress=False)
    runs = {r["job"]: r["scoring"] for r in tables.run_rows(jobs)}
    assert runs[folders[0].name] == "tagged" and runs[folders[1].name] == "math_verify"
    t1 = tables.table1_rows(jobs)
    mixed = [r for r in t1 if ";" in r["scoring"]]
    assert [r["scoring"] for r in mixed] == ["math_verify; tagged"]  # one arm pooled two scorers: both are named
    md = render(ReportData(jobs, [], [sweep], t1, [], [], [], []))
    header = next(line for line in md.splitlines() if "accuracy per seed" in line)
    assert "| scored by |" in header
    assert sum("| math_verify |" in line for line in md.splitlines()) == len(t1) - 1
