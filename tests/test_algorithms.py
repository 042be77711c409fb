"""The `algorithm` axis (algorithms.py) on the tiny model with real TRL: every option composes, trains a
few steps with its own TRL trainer and objective, and writes the same records as the study's GRPO."""

from __future__ import annotations

import numpy as np
import pytest

from grpo_rank.config.validate import validate
from grpo_rank.data.tasks import gold_completion, gsm8k_solution, load_split
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.pipeline.job import run_job, training_data
from grpo_rank.record.files import COMPLETIONS, GRAD_COLUMNS, GRADS, TRAIN_LOG, read_grad_records, read_jsonl
from grpo_rank.training.train import TRAINERS, grpo_args
from tests.conftest import TINY, typed


def test_every_algorithm_composes_and_names_a_trainer():
    for name, algo in ALGORITHMS.items():
        cfg = typed(f"algorithm={name}")
        validate(cfg)
        assert cfg.algorithm.name == name and algo.trainer in TRAINERS


def test_the_default_is_trls_grpo_loss_every_earlier_run_used():
    assert typed().algorithm.name == "dapo"


@pytest.mark.parametrize("name, loss_type, scale", [("grpo", "grpo", "group"), ("dapo", "dapo", "group"),
                                                    ("dr_grpo", "dr_grpo", "none"), ("bnpo", "bnpo", "group")])
def test_grpo_variants_reach_trls_config(tmp_path, name, loss_type, scale):
    args = grpo_args(typed(f"algorithm={name}"), tmp_path, 3)
    assert (args.loss_type, args.scale_rewards, args.max_steps, args.max_grad_norm) == (loss_type, scale, 3, 0.0)


def test_an_unknown_algorithm_fails_at_compose_time_naming_the_choices():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="algorithm"):
        typed("algorithm=ppo")


def test_gold_solutions_are_in_the_answer_format():
    cfg = typed(*TINY)
    ex = load_split(cfg.task, "train")[0]
    assert gold_completion(ex) == f"<think>{ex.solution}</think><answer>{ex.answer}</answer>"
    lhs, result = ex.solution.rsplit(" = ", 1)
    assert result == ex.answer and lhs  # the reasoning ends in the gold number
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether she sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert gsm8k_solution(text) == "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips."


def test_sft_trains_on_solutions_and_rl_on_prompts():
    cfg = typed(*TINY, "algorithm=sft")
    sft, rl = training_data(cfg), training_data(typed(*TINY, "algorithm=rloo"))
    assert "completion" in sft.column_names and "completion" not in rl.column_names
    first = load_split(cfg.task, "train")[0]
    assert sft[0]["completion"] == [{"role": "assistant", "content": gold_completion(first)}]
    assert sft[0]["prompt"] == rl[0]["prompt"]  # the same questions, asked the same way


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, cache_dir):
    """One 2-step job per trainer kind (and grpo's loss), as `python -m grpo_rank.run` runs it."""
    out = {}
    for name in ("grpo", "rloo", "sft"):
        job_dir = tmp_path_factory.mktemp(name)
        cfg = typed(*TINY, f"algorithm={name}", "grpo.save_steps=0", "eval.n=4", "tracking.mode=disabled",
                    "tracking.completions_every=1", f"profile.cache_dir={job_dir}/profiles")
        out[name] = (run_job(cfg, job_dir), job_dir)
    return out


@pytest.mark.parametrize("name", ["dapo", "dr_grpo", "bnpo"])
def test_the_other_grpo_losses_run_a_step_and_write_the_records(tmp_path, cache_dir, name):
    cfg = typed(*TINY, f"algorithm={name}", "grpo.steps=1", "grpo.save_steps=0", "eval.n=2", "tracking.mode=disabled",
                f"profile.cache_dir={tmp_path}/profiles")
    result = run_job(cfg, tmp_path)
    assert result.status == "ok" and result.config["algorithm"]["name"] == name
    grads = read_grad_records(tmp_path / GRADS)
    assert set(grads) == set(GRAD_COLUMNS) and sorted(set(grads["step"].tolist())) == [1]


def test_rank_one_builds_and_trains_with_the_planned_count(tmp_path, cache_dir):
    """The capacity curve's smallest arm: r=1 on every layer, no multiple of 4."""
    cfg = typed(*TINY, "lora.r=1", "grpo.steps=1", "grpo.save_steps=0", "eval.n=2", "tracking.mode=disabled",
                f"profile.cache_dir={tmp_path}/profiles")
    result = run_job(cfg, tmp_path)
    assert result.status == "ok" and result.allocation.ranks == [1] * 12
    # tiny: hidden 64, intermediate 128, 4 heads of 16, 2 KV heads: per rank q,o 128, k,v 96, gate,up,down 192
    assert result.params.built == result.params.planned == 12 * (2 * 128 + 2 * 96 + 3 * 192)
    grads = read_grad_records(tmp_path / GRADS)
    assert set(grads["rank"][grads["matrix"] != "W"].tolist()) == {1}


@pytest.mark.parametrize("name", ["grpo", "rloo", "sft"])
def test_every_trainer_writes_the_study_records(jobs, name):
    result, job_dir = jobs[name]
    assert result.status == "ok" and result.eval.n == 4 and result.params.built == result.params.planned
    grads = read_grad_records(job_dir / GRADS)
    assert set(grads) == set(GRAD_COLUMNS)
    lora = grads["matrix"] != "W"
    assert sorted(set(grads["step"].tolist())) == [1, 2]
    # every module's B gradient is live from step 1 (A's is zero at init, B starts at zero)
    b = (grads["matrix"] == "B") & (grads["step"] == 1)
    assert b.sum() == 12 * 7 and np.all(grads["norm"][b] > 0)
    assert np.all(np.isfinite(grads["norm"][lora]))
    log = [r for r in read_jsonl(job_dir / TRAIN_LOG) if r["phase"] == "train"]
    assert [r["step"] for r in log] == [1, 2]
    assert result.adapter is not None and (job_dir / "adapter" / result.adapter.weights).exists()
    # the completions each step sampled, for the trainers that sample (sft learns from gold solutions)
    watched = sorted({r["step"] for r in read_jsonl(job_dir / COMPLETIONS)})
    assert watched == ([] if name == "sft" else [1, 2])


def test_the_objectives_differ(jobs):
    """The same model, seed and LoRA: a different objective gives other gradients at the first step."""
    first = {}
    for name, (_, job_dir) in jobs.items():
        g = read_grad_records(job_dir / GRADS)
        sel = (g["matrix"] == "B") & (g["step"] == 1)
        first[name] = g["norm"][sel]
    assert not np.allclose(first["grpo"], first["sft"]) and not np.allclose(first["rloo"], first["sft"])
    sft_log = [r for r in read_jsonl(jobs["sft"][1] / TRAIN_LOG) if r["phase"] == "train"]
    assert "reward" not in sft_log[0] and "loss" in sft_log[0]  # SFT learns from solutions, not rewards
    rloo_log = [r for r in read_jsonl(jobs["rloo"][1] / TRAIN_LOG) if r["phase"] == "train"]
    assert "reward" in rloo_log[0]
