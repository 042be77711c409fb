"""Every config option composes into the typed schema; typos and bad values fail early with a
one-line error naming the field."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from grpo_rank.config import ConfigError, RunConfig, to_typed, validate

from .conftest import CONF, compose, run_cli, ROOT

GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in
          ("model", "task", "strategy", "budget", "experiment")}


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes_and_validates(group, option):
    extra = ["task.path=/data"] if option == "gsm8k" else []
    cfg = to_typed(compose(f"{group}={option}", *extra))
    assert isinstance(cfg, RunConfig)
    validate(cfg)


def test_groups_are_what_the_readme_promises():
    assert GROUPS["strategy"] == ["none", "proportional", "random", "uniform"]
    assert GROUPS["budget"] == ["full", "reduced70"]
    assert {"smollm2_135m", "qwen2_5_1_5b_instruct", "tiny"} <= set(GROUPS["model"])
    assert {"gsm8k", "arithmetic"} <= set(GROUPS["task"])
    assert {"paper", "demo"} <= set(GROUPS["experiment"])


def test_paper_experiment_is_the_study():
    cfg = to_typed(compose("experiment=paper"))
    assert cfg.model.path == "Qwen/Qwen2.5-1.5B-Instruct" and cfg.task.name == "gsm8k"
    assert cfg.lora.r == 32 and len(cfg.lora.target_modules) == 7
    assert (cfg.grpo.num_generations, cfg.grpo.beta, cfg.grpo.learning_rate, cfg.grpo.steps) == (4, 0.05, 1e-5, 1000)
    assert cfg.eval.n == 200 and cfg.grpo.use_vllm == "true"


def test_defaults_are_the_offline_demo():
    cfg = to_typed(compose())
    assert cfg.model.source == "gguf_package" and cfg.task.name == "arithmetic"
    assert cfg.strategy.name == "uniform" and cfg.budget.fraction == 1.0 and cfg.seed == 0


def test_reduced_budget_and_any_fraction():
    assert to_typed(compose("budget=reduced70")).budget.fraction == 0.7
    assert to_typed(compose("budget.fraction=0.5")).budget.fraction == 0.5


@pytest.mark.parametrize("override", ["lora.rank=8", "grpo.stepz=3", "seedd=1", "model.tiny.layers=3"])
def test_misspelt_key_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose(override)


@pytest.mark.parametrize("override", ["seed=abc", "grpo.steps=many", "budget.fraction=lots"])
def test_wrong_type_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose(override)


@pytest.mark.parametrize("overrides, field", [
    (["grpo.num_generations=3"], "grpo.per_device_batch_size"),
    (["grpo.num_generations=1"], "grpo.num_generations"),
    (["lora.r_min=6"], "lora.multiple"),
    (["lora.target_modules=[qproj]"], "lora.target_modules"),
    (["budget.fraction=0"], "budget.fraction"),
    (["strategy=proportional", "dry_run=true"], "profile.from_run"),
    (["task=gsm8k", "task.hub_id=null"], "task.path"),
    (["tracking.mode=cloud"], "tracking.mode"),
    (["lora.alpha_mode=sqrt"], "lora.alpha_mode"),
    (["strategy.name=greedy"], "strategy.name"),
])
def test_cross_field_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(to_typed(compose(*overrides)))


def test_cli_bad_config_is_one_line_before_any_model_loads(tmp_path):
    proc = run_cli(["grpo_rank.run", "model=tiny", "grpo.num_generations=3", f"hydra.run.dir={tmp_path}/r"],
                   cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err[-1].startswith("grpo-rank: config error: grpo.per_device_batch_size=8")
    assert not (tmp_path / "r" / "result.json").exists()  # nothing ran, nothing half-written
