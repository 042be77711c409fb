"""config.py: every config option composes to what its YAML says and is schema-checked; closed choices
come from the registries; every leaf field declares what it changes, and the run identity and profile
key payloads follow those declarations (the same decisions as the hand-kept lists they replace)."""

from __future__ import annotations

import dataclasses
import shutil
import types
import typing
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.config.fields import OneOf, Range, leaf_fields
from grpo_rank.config.schema import ConfigError, RunConfig, result_payload, to_typed
from grpo_rank.config.validate import validate
from grpo_rank.data import models
from grpo_rank.data.tasks import TASKS
from grpo_rank.errors import InputError
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.rewards import REWARDS
from tests.conftest import CONF, compose, typed

GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in
          ("model", "task", "strategy", "budget", "algorithm", "rewards", "experiment")}
OPTIONS = [(g, o) for g, opts in GROUPS.items() for o in opts]
LEAVES = {name: (f, tp) for name, f, tp in leaf_fields(RunConfig)}


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _package(path: Path, group: str) -> str:
    """The package a group file merges into: its `# @package` header, else the group's name."""
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            return line.split()[-1]
    return group


def _flatten(node, prefix: str) -> dict[str, object]:
    """{dotted leaf name: value} of a YAML mapping; a mapping-typed leaf (grpo.rewards) stays whole."""
    if isinstance(node, dict) and prefix.rstrip(".") not in LEAVES:
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def expected_values(group: str, option: str) -> dict[str, object]:
    """What composing `group=option` must yield, read from the YAML files themselves."""
    path = CONF / group / f"{option}.yaml"
    data = OmegaConf.to_container(OmegaConf.load(path))
    package = _package(path, group)
    out: dict[str, object] = {}
    for entry in data.pop("defaults", []):  # an experiment: `override /<group>: <option>` entries
        (key, value), = entry.items()
        out.update(expected_values(key.removeprefix("override /"), value))
    out.update(_flatten(data, "" if package == "_global_" else f"{package}."))
    return out


def _resolved(want: dict, cfg) -> dict:
    """An interpolation `${key}` in a YAML is expected to compose to that key's value; a resolver's
    (`${grpo_rank_model_name:${model.path}}`) to what it resolved to (its own test checks the value)."""
    def expect(k, v):
        if not (isinstance(v, str) and v.startswith("${") and v.endswith("}")):
            return v
        return _get(cfg, k) if ":" in v else _get(cfg, v[2:-1])
    return {k: expect(k, v) for k, v in want.items()}


# what an option needs besides itself to validate: model=hf has no model to default to
NEEDS = {("model", "hf"): ("model.path=Qwen/Qwen3-0.6B",)}


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes_to_its_yaml_and_validates(group, option):
    want = expected_values(group, option)
    assert want, f"{group}/{option}.yaml sets nothing"
    # task=hf names no data of its own: where the data is, is the user's (validate checks it is given)
    needs = NEEDS.get((group, option), ()) or (("task.path=data",) if (group, option) == ("task", "hf") else ())
    cfg = typed(f"{group}={option}", *needs)
    want.update((o.split("=")[0], o.split("=", 1)[1]) for o in needs)
    got = {key: _get(cfg, key) for key in want}
    assert got == _resolved(want, cfg)
    validate(cfg)


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_is_checked_by_the_schema(group, option, tmp_path):
    """A broken copy of the option's YAML (a key no schema has, or an unknown reward) is rejected: the
    file is typed by config.py, not merged into an open dict."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / group / f"{option}.yaml"
    path.write_text(path.read_text() + "\nnot_a_setting: 1\n")
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ConfigError)):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            validate(to_typed(hydra_compose(config_name="config", overrides=[f"{group}={option}"])))


def test_groups_follow_the_registries():
    assert GROUPS["strategy"] == sorted(STRATEGIES)  # a YAML per strategy, no YAML without one
    assert GROUPS["algorithm"] == sorted(ALGORITHMS)
    assert set(GROUPS["task"]) == set(TASKS)
    assert GROUPS["budget"] == ["full", "reduced70"]
    assert {"smollm2_135m", "qwen2_5_1_5b_instruct", "tiny"} <= set(GROUPS["model"])
    assert {"paper", "demo"} <= set(GROUPS["experiment"])
    for option in GROUPS["rewards"]:
        assert set(expected_values("rewards", option)) <= {f"grpo.rewards.{name}" for name in REWARDS} | {
            "grpo.rewards"}


def test_closed_choices_are_the_registries_keys():
    def names(field):
        rule = LEAVES[field][0].metadata["valid"]
        assert isinstance(rule, OneOf)
        return rule.names()

    assert names("strategy.name") == list(STRATEGIES)
    assert names("task.name") == list(TASKS)
    assert names("model.source") == list(models.LOADERS)
    with pytest.raises(ConfigError) as err:
        validate(typed("strategy.name=greedy"))
    assert str(err.value) == f"strategy.name='greedy': unknown strategy; use one of {', '.join(STRATEGIES)}"


def test_paper_experiment_is_the_study():
    cfg = typed("experiment=paper")
    assert cfg.model.path == "Qwen/Qwen2.5-1.5B-Instruct" and cfg.task.name == "gsm8k"
    assert cfg.lora.r == 32 and len(cfg.lora.target_modules) == 7
    assert (cfg.grpo.num_generations, cfg.grpo.beta, cfg.grpo.learning_rate, cfg.grpo.steps) == (4, 0.05, 1e-5, 1000)
    assert cfg.eval.n == 200 and cfg.grpo.use_vllm is True
    assert cfg.grpo.rewards == {"format": 1.0, "correctness": 1.0}  # binary, and nothing of the demo's left
    # the study allocated from its full-length uniform run: the profile follows grpo.steps, also when overridden
    assert cfg.profile.steps == 1000 and typed("experiment=paper", "grpo.steps=40").profile.steps == 40


def test_defaults_are_the_offline_demo():
    cfg = typed()
    assert cfg.model.source == "gguf_package" and cfg.task.name == "arithmetic"
    assert cfg.strategy.name == "uniform" and cfg.budget.fraction == 1.0 and cfg.seed == 0
    assert cfg.grpo.rewards == {"format_partial": 0.5, "correctness_partial": 1.0} and cfg.grpo.use_vllm is None
    assert typed("model=tiny").grpo.rewards == cfg.grpo.rewards


def test_rewards_by_name_and_weight():
    assert typed("rewards=binary", "+grpo.rewards.format_partial=0.25").grpo.rewards == {
        "format": 1.0, "correctness": 1.0, "format_partial": 0.25}
    assert typed("grpo.rewards.format_partial=2").grpo.rewards["format_partial"] == 2.0
    with pytest.raises(ConfigError, match=r"^grpo\.rewards=\{\}: no reward chosen"):
        validate(typed("~rewards"))


def test_reduced_budget_and_any_fraction():
    assert typed("budget=reduced70").budget.fraction == 0.7
    assert typed("budget.fraction=0.5").budget.fraction == 0.5


@pytest.mark.parametrize("override", ["lora.rank=8", "grpo.stepz=3", "seedd=1", "model.tiny.layers=3"])
def test_misspelt_key_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose(override)


@pytest.mark.parametrize("override", ["seed=abc", "grpo.steps=many", "budget.fraction=lots", "grpo.use_vllm=auto"])
def test_wrong_type_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose(override)


@pytest.mark.parametrize("overrides, message", [
    (["grpo.num_generations=3"], "grpo.per_device_batch_size=8: the batch"),
    (["grpo.num_generations=1"], "grpo.num_generations=1: must be >= 2"),
    (["lora.r_min=6"], "lora.r_min=6: must be a multiple of lora.multiple=4"),
    (["lora.multiple=0"], "lora.multiple=0: must be >= 1"),  # was reported as lora.r_min
    (["lora.r_max=2"], "lora.r_max=2: must be >= lora.r_min=4"),
    (["lora.dropout=1.5"], "lora.dropout=1.5: must be in [0, 1)"),
    (["grpo.learning_rate=-1"], "grpo.learning_rate=-1.0: must be > 0; e.g. grpo.learning_rate=5e-05"),
    (["eval.split=tset"], "eval.split='tset': task arithmetic has no such split; use one of train, test"),
    (["lora.target_modules=[q-proj]"], "lora.target_modules=['q-proj']: not a module name or dotted path tail"),
    (["lora.target_modules=[all-linear,q_proj]"], "lora.target_modules=['all-linear', 'q_proj']: all-linear already"),
    (["model.attn_implementation=fast"], "model.attn_implementation='fast': unknown attention; use one of eager"),
    (["budget.fraction=0"], "budget.fraction=0.0: must be > 0"),
    (["strategy=proportional", "dry_run=true"], "profile.from_run=None: dry_run trains nothing"),
    (["task=gsm8k", "task.hub_id=null"], "task.path=None: gsm8k needs local files or a hub id"),
    (["tracking.mode=cloud"], "tracking.mode='cloud': unknown tracking mode; use one of auto, online"),
    (["lora.alpha_mode=sqrt"], "lora.alpha_mode='sqrt': unknown alpha mode; use one of fixed, rslora, per_rank"),
    (["+grpo.rewards.typo=1.0"], "grpo.rewards.typo=1.0: unknown reward; use names from format, correctness"),
])
def test_errors_name_the_field_and_the_fix(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(typed(*overrides))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value) and isinstance(err.value, InputError)


def test_every_leaf_field_declares_what_it_changes():
    for name, (f, _) in LEAVES.items():
        affects = f.metadata.get("affects")
        assert isinstance(affects, frozenset), f"{name} does not say which results it changes"
        assert affects <= {"job", "profile"}, name
        assert "profile" not in affects or "job" in affects, f"{name} changes a profile but not the job using it"


def _numeric(tp) -> bool:
    """int, float, or either or None; the weights of grpo.rewards are checked by check_rewards."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(a in (int, float) for a in typing.get_args(tp))
    return tp in (int, float)


def test_every_numeric_field_has_a_range():
    numeric = [name for name, (_, tp) in LEAVES.items() if _numeric(tp)]
    assert "grpo.learning_rate" in numeric and "eval.n" in numeric and "dry_run" not in numeric
    missing = [name for name in numeric if not isinstance(LEAVES[name][0].metadata.get("valid"), Range)]
    assert missing == []
    for name in numeric:  # every default is inside its own range (an interpolation is checked once resolved)
        f = LEAVES[name][0]
        if f.default is not dataclasses.MISSING and not str(f.default).startswith("${"):
            assert f.metadata["valid"].problem(f.default) is None, name


# The hand-kept lists that result_payload replaces, as they stood in run.identity and
# profile.profile_payload (main e72c1ca): the payloads must make the same decisions.
OLD_IDENTITY_DROPS = {"tracking", "dry_run", "cache_dir", "force", "profile.cache_dir", "grpo.save_steps"}
OLD_PROFILE_KEEPS = {"model", "task", "lora", "grpo", "seed"}
OLD_PROFILE_DROPS = {"lora.r_min", "lora.r_max", "lora.multiple", "grpo.logging_steps", "grpo.save_steps",
                     "grpo.steps"}
# added after e72c1ca: thread count changes no result, the split's tolerance only whether a job stops,
# where an adapter is pushed nothing it computed
NEW_FIELDS_WITHOUT_RESULT = {"threads", "profile.per_reward_tolerance", "hub"}
# added later, left out at the value every earlier result had (omit_at): distributed.processes=1, eval.backend=hf,
# the task=hf settings, the chat template override and the user's reward modules
NEW_FIELDS_AT_OMITTED_DEFAULT = {"distributed", "eval.backend", "task.prompt_column", "task.answer_column",
                                 "task.answer_extractor", "task.train_split", "task.test_split", "task.chat_template",
                                 "grpo.reward_modules"}
# likewise, with any causal LM: model.revision=null, trust_remote_code=false, attn_implementation=null,
# quantization=null, and the default lora.layer_pattern
NEW_MODEL_FIELDS = {"model.revision", "model.trust_remote_code", "model.attn_implementation", "model.quantization",
                    "lora.layer_pattern"}


def _drop(d: dict, dotted: set[str]) -> dict:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for name in dotted:
        head, _, tail = name.partition(".")
        if tail:
            if head in d:  # a profile's payload keeps only some groups
                d[head].pop(tail, None)
        else:
            d.pop(head, None)
    return d


@pytest.mark.parametrize("overrides", [(), ("experiment=paper",), ("model=tiny", "strategy=proportional")])
def test_result_payloads_make_the_old_decisions(overrides):
    cfg = typed(*overrides)
    full = dataclasses.asdict(cfg)
    assert result_payload(cfg, "job") == _drop(full, OLD_IDENTITY_DROPS | NEW_FIELDS_WITHOUT_RESULT
                                               | NEW_FIELDS_AT_OMITTED_DEFAULT | NEW_MODEL_FIELDS)
    old_profile = _drop({k: v for k, v in full.items() if k in OLD_PROFILE_KEEPS},
                        OLD_PROFILE_DROPS | NEW_FIELDS_AT_OMITTED_DEFAULT | NEW_MODEL_FIELDS)
    # added after e72c1ca: whether the frozen weights' gradients are recorded changes a profile's records
    old_profile["profile"] = {"full_weight": cfg.profile.full_weight, "per_reward": cfg.profile.per_reward}
    # added with the algorithm axis: the objective changes a profile's gradients
    old_profile["algorithm"] = full["algorithm"]
    assert result_payload(cfg, "profile") == old_profile


@pytest.mark.parametrize("override, job, profile", [
    ("tracking.mode=disabled", False, False),
    ("force=true", False, False),
    ("grpo.save_steps=5", False, False),
    ("profile.per_reward_tolerance=0.01", False, False),
    ("profile.cache_dir=/elsewhere", False, False),
    ("threads=1", False, False),
    ("distributed.processes=2", True, True),
    ("strategy=random", True, False),
    ("eval.n=8", True, False),
    ("eval.backend=vllm", True, False),
    ("lora.r_max=32", True, False),
    ("grpo.steps=9", True, False),
    ("profile.steps=7", True, False),
    ("grpo.learning_rate=1e-4", True, True),
    ("lora.r=16", True, True),
    ("seed=3", True, True),
    ("rewards=binary", True, True),
    ("task.train_size=64", True, True),
    ("model.revision=v2", True, True),
    ("model.trust_remote_code=true", True, True),
    ("model.attn_implementation=eager", True, True),
    ("model.quantization=4bit", True, True),
    (r"lora.layer_pattern='(?:^|\.)h\.(\d+)\.'", True, True),
    ("lora.target_modules=[all-linear]", True, True),
    ("task.chat_template='{{ messages }}'", True, True),
    ("eval.scoring=math_verify", True, False),
])
def test_result_payload_keeps_what_changes_a_result(override, job, profile):
    base, changed = typed(), typed(override)
    assert (result_payload(base, "job") != result_payload(changed, "job")) == job
    assert (result_payload(base, "profile") != result_payload(changed, "profile")) == profile


def test_result_payload_rejects_an_unknown_scope():
    with pytest.raises(ValueError, match="scope 'eval'"):
        result_payload(RunConfig(), "eval")
