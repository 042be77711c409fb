"""What a job keeps of its training, read back as a user would: one tiny proportional job (a profile, then
training at the ranks it gave, at a learning rate large enough for the adapter to change the replies).
PEFT reloads its adapter/ into the model whose greedy replies the job recorded, adapter_config.json's
rank_pattern is the allocation, `python -m grpo_rank.evaluate` reproduces the job's evaluation and writes
beside it, completions.jsonl and the offline W&B run hold the watched step's completions with every
reward's value, and hub.push without a hub is one logged line in a job that ends ok."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from grpo_rank.allocation import lora
from grpo_rank.allocation.allocate import Bounds, plan
from grpo_rank.objective.rewards import REWARDS
from grpo_rank.pipeline import reevaluate
from grpo_rank.pipeline.job import run_job
from grpo_rank.record.evaluation import read_record
from grpo_rank.record.files import read_jsonl
from grpo_rank.record.result import from_dict, read_result, to_dict
from grpo_rank.training import adapter
from tests.conftest import TINY, run_cli, typed, wandb_records

WATCH_EVERY = 2  # with grpo.steps=2 (TINY): step 2 is watched, step 1 is not


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def job(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("adapter")
    cfg = typed(*TINY, "strategy=proportional", "grpo.learning_rate=0.05", "grpo.save_steps=0",
                "tracking.mode=offline", f"tracking.completions_every={WATCH_EVERY}", "hub.push=true",
                f"profile.cache_dir={root}/profiles")
    handler, before = _Lines(), os.environ.get("HF_HUB_OFFLINE")
    logging.getLogger("grpo_rank").addHandler(handler)
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub here: the push must be skipped, not tried
    try:
        result = run_job(cfg, root / "job")
    finally:
        logging.getLogger("grpo_rank").removeHandler(handler)
        os.environ.pop("HF_HUB_OFFLINE") if before is None else os.environ.update(HF_HUB_OFFLINE=before)
    return root / "job", cfg, result, handler.lines


def _replies(model, tokenizer, cfg) -> list[str]:
    from grpo_rank.data.tasks import load_split
    from grpo_rank.evaluation.evaluate import evaluate

    test = load_split(cfg.task, cfg.eval.split)[: cfg.eval.n]
    ev = evaluate(model, tokenizer, test, cfg.task.system_prompt, batch_size=cfg.eval.batch_size,
                  max_new_tokens=cfg.eval.max_new_tokens, few_shot=cfg.task.few_shot, scoring=cfg.eval.scoring,
                  progress=False)
    return [o["reply"] for o in ev.outcomes]


def test_peft_reloads_the_adapter_into_the_evaluated_model(job):
    from peft import PeftModel

    from grpo_rank.data import models

    job_dir, cfg, result, _ = job
    assert result.status == "ok" and read_result(job_dir).adapter == result.adapter
    weights = job_dir / "adapter" / result.adapter.weights
    assert result.adapter.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest() and result.adapter.kind == "LORA"
    recorded = [o["reply"] for o in read_jsonl(job_dir / "eval_outcomes.jsonl")]
    base, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    assert _replies(base, tokenizer, cfg) != recorded  # the adapter is what made these replies
    model = PeftModel.from_pretrained(models.load(cfg.model, cfg.cache_dir, cfg.seed)[0], job_dir / "adapter")
    assert _replies(model, tokenizer, cfg) == recorded
    assert not list(job_dir.glob(".adapter.tmp*"))  # the temp folder was renamed into place


def test_rank_pattern_rebuilds_the_proportional_allocation(job):
    job_dir, _, result, _ = job
    ranks = result.allocation.ranks
    assert len(set(ranks)) > 1  # a real re-allocation, not uniform ranks
    config = adapter.read_config(job_dir)
    assert adapter.layer_ranks(config, len(ranks)) == ranks
    # one key per layer (lora.layer_keys): the layer's escaped path and what lies below it
    assert {int(re.search(r"layers\\\.(\d+)\(", k).group(1)): v for k, v in config["rank_pattern"].items()} == dict(
        enumerate(ranks))


def test_rank_pattern_of_a_random_allocation_survives_save_and_load(tmp_path):
    from peft import get_peft_model

    from grpo_rank.data import models

    cfg = typed(*TINY, "strategy=random", "seed=3")
    ranks = plan("random", None, r=8, num_layers=12, fraction=1.0, bounds=Bounds(4, 64, 4), seed=3).ranks
    assert len(set(ranks)) > 1
    base, _ = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    sites = lora.find_sites(base, cfg.lora.target_modules)
    info = adapter.save(get_peft_model(base, lora.lora_config(sites, ranks, cfg.lora)), tmp_path, "card\n")
    assert adapter.layer_ranks(adapter.read_config(tmp_path), 12) == ranks
    reloaded = adapter.load(models.load(cfg.model, cfg.cache_dir, cfg.seed)[0], tmp_path, info)
    assert lora.built_ranks(reloaded) == {s.name: ranks[s.layer] for s in sites}
    (tmp_path / "adapter" / info.weights).write_bytes(b"not these weights")
    with pytest.raises(Exception, match="sha256 differs"):
        adapter.check(tmp_path, info)


def test_the_model_card_has_the_allocation_accuracy_and_settings(job):
    job_dir, _, result, _ = job
    text = (job_dir / "adapter" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    assert yaml.safe_load(front)["library_name"] == "peft"
    ev = result.eval
    assert f"Accuracy **{ev.accuracy:.3f}** (95% Wilson interval [{ev.ci_low:.3f}, {ev.ci_high:.3f}])" in body
    assert f"{ev.correct} of {ev.n} questions" in body
    for layer, rank in enumerate(result.allocation.ranks):
        share = result.allocation.importance[layer] / sum(result.allocation.importance)
        assert f"| {layer} | {rank} | {share:.4f} |" in body
    assert result.job.config_hash in body and "strategy:\n  name: proportional" in body
    assert f"PeftModel.from_pretrained(base_model, {result.adapter.hub.repo!r})" in body


def test_hub_push_without_a_hub_is_one_line_and_the_job_ends_ok(job):
    job_dir, _, result, lines = job
    hub = read_result(job_dir).adapter.hub
    assert result.status == "ok" and hub.pushed is False and hub.reason == "HF_HUB_OFFLINE is set"
    assert hub.repo == f"{result.job.group}-s0"
    said = [line for line in lines if "hub.push" in line]
    assert len(said) == 1 and "not pushed (HF_HUB_OFFLINE is set)" in said[0], lines


def test_a_push_that_fails_is_one_line_not_an_error(job, monkeypatch, caplog):
    from grpo_rank.pipeline import hub

    job_dir, _, _, _ = job
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    with caplog.at_level(logging.WARNING, logger="grpo_rank"):
        info = hub.push(job_dir / "adapter", "someone/repo", True, "test")
    assert info.pushed is False and info.reason.startswith("push failed: ") and "\n" not in info.reason
    assert len([r for r in caplog.records if "hub.push" in r.getMessage()]) == 1


def test_completions_at_the_watched_steps_with_every_reward(job):
    job_dir, cfg, _, _ = job
    rows = read_jsonl(job_dir / "completions.jsonl")
    per_step = cfg.grpo.per_device_batch_size * cfg.grpo.grad_accum  # the completions one step samples
    assert [r["step"] for r in rows] == [WATCH_EVERY] * per_step
    weights = cfg.grpo.rewards
    for r in rows:
        assert set(r["rewards"]) == set(weights)
        for name, value in r["rewards"].items():  # the value the reward gives this completion, recomputed
            assert REWARDS[name](completions=[r["completion"]], answer=[r["answer"]]) == [value]
        assert r["reward"] == pytest.approx(sum(weights[n] * v for n, v in r["rewards"].items()))
    # the very completions TRL trained step 2 on: its logged reward means are theirs
    logged = next(x for x in read_jsonl(job_dir / "train_log.jsonl") if x["phase"] == "train" and x["step"] == 2)
    for name in weights:
        mean = sum(r["rewards"][name] for r in rows) / len(rows)
        assert logged[f"rewards/{REWARDS[name].__name__}/mean"] == pytest.approx(mean, abs=1e-6)
    assert logged["reward"] == pytest.approx(sum(r["reward"] for r in rows) / len(rows), abs=1e-6)

    history = [r["history"]["item"] for r in wandb_records(job_dir) if r.get("type") == "history"]
    logged_tables = [h for h in history if h.get("completions._type") == "table-file"]
    assert [h["train/global_step"] for h in logged_tables] == [WATCH_EVERY]
    table = json.loads(next(job_dir.glob("wandb/*/files/media/table/completions_*.table.json")).read_text())
    assert table["columns"] == ["step", "prompt", "answer", "completion", *weights, "reward"]
    assert [row[3] for row in table["data"]] == [r["completion"] for r in rows]
    assert [row[4:4 + len(weights)] for row in table["data"]] == [[r["rewards"][n] for n in weights] for r in rows]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_again_reproduces_the_job_then_writes_beside_it(job):
    job_dir, _, result, _ = job
    kept = {p: _digest(job_dir / p) for p in ("result.json", "eval_outcomes.jsonl")}
    same = run_cli(["grpo_rank.evaluate", str(job_dir)], cwd=job_dir.parent, timeout=300)
    assert same.returncode == 0, same.stderr[-2000:]
    (first,) = list((job_dir / "evaluations").iterdir())
    rec = read_record(first)
    assert rec.eval == result.eval and rec.adapter.sha256 == result.adapter.sha256
    assert read_jsonl(first / "outcomes.jsonl") == read_jsonl(job_dir / "eval_outcomes.jsonl")
    assert f"accuracy {result.eval.accuracy:.3f}" in same.stdout and "the job's own settings" in same.stdout

    # in this process (what the command runs, without its start-up): another n, another folder
    fewer = reevaluate.prepare(job_dir, ["eval.n=4"])
    reevaluate.run(fewer, progress=False)
    second = next(p for p in (job_dir / "evaluations").iterdir() if p != first)
    assert second == fewer.folder
    rec4 = read_record(second)
    assert rec4.eval.n == 4 and rec4.settings["n"] == 4 and rec4.overrides == ["eval.n=4"]
    assert read_jsonl(second / "outcomes.jsonl") == read_jsonl(job_dir / "eval_outcomes.jsonl")[:4]
    assert read_record(first).eval == result.eval  # the first evaluation is untouched
    assert {p: _digest(job_dir / p) for p in kept} == kept  # and so is the job's own record


@pytest.mark.parametrize("override, named", [("eval.n=0", "eval.n=0: must be >= 1"),
                                             ("lora.r=4", "lora.r: only eval.* settings"),
                                             ("eval.nope=1", "eval.nope:"),
                                             ("eval.split=validation", "eval.split='validation'")])
def test_a_bad_override_is_one_line_before_any_model_loads(job, override, named):
    job_dir, _, _, _ = job
    before = sorted((job_dir / "evaluations").iterdir()) if (job_dir / "evaluations").exists() else []
    proc = run_cli(["grpo_rank.evaluate", str(job_dir), override], cwd=job_dir.parent, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"grpo-rank: config error: {named}"), proc.stderr
    after = sorted((job_dir / "evaluations").iterdir()) if (job_dir / "evaluations").exists() else []
    assert after == before


def test_records_from_before_adapters_still_read(job):
    job_dir, _, result, _ = job
    old = to_dict(result)
    del old["adapter"]
    assert from_dict(old).adapter is None and from_dict(to_dict(result)) == result


def test_a_hub_repo_that_is_no_repo_id_is_one_line():
    from grpo_rank.config.schema import ConfigError
    from grpo_rank.config.validate import validate

    with pytest.raises(ConfigError, match=r"^hub.repo='a b/c': not a Hugging Face repo id"):
        validate(typed(*TINY, "hub.repo='a b/c'"))
