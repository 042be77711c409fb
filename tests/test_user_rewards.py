"""The user's own reward functions (`grpo.reward_modules`, user_rewards.py): a module the test writes into
tmp_path (put on sys.path, as PYTHONPATH puts it there for the command), checked at start-up in one line
per problem, in the run identity with its source's hash, and a real tiny GRPO job that trains with it on a
lab's jsonl (task=hf) and is evaluated with eval.scoring=math_verify."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from grpo_rank.objective.user_rewards import module_versions, registry
from grpo_rank.pipeline.tracking import identity
from grpo_rank.profiling.cache import profile_key
from grpo_rank.record.files import OUTCOMES, TRAIN_LOG, read_jsonl
from grpo_rank.record.result import read_result
from grpo_rank.run import prepare
from tests.conftest import TINY, compose, typed
from tests.conftest import refused as refused_line

REWARDS_SOURCE = '''
CALLS = []  # what TRL passed, for the test to read back


def brevity(completions, answer, **kwargs):
    """1.0 for a reply under 40 characters that contains the gold answer."""
    CALLS.append({"n": len(completions), "answer": list(answer), "keys": sorted(kwargs)})
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) < 40 and str(g) in t) for t, g in zip(texts, answer)]


def no_kwargs(completions, answer):
    return [0.0] * len(completions)


def needs_solution(completions, solution, **kwargs):
    return [0.0] * len(completions)


def positional(completions, /, **kwargs):
    return [0.0] * len(completions)


def format(completions, **kwargs):  # shadows the built-in reward of that name
    return [0.0] * len(completions)


class Judge:
    def __call__(self, completions, **kwargs):
        return [0.0] * len(completions)


def _helper(x):
    return x
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A reward module with a fresh name (imports are cached per process), importable from tmp_path."""
    name = f"lab_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(REWARDS_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def refused(*overrides: str) -> str:
    return refused_line(overrides)


def test_a_module_function_is_a_reward_by_name(module):
    funcs = registry({"format_partial": 0.5, "brevity": 1.0}, [module])
    assert funcs["brevity"].__module__ == module and funcs["format_partial"].__name__ == "format_partial_reward"
    cfg = prepare(compose("model=tiny", f"grpo.reward_modules=[{module}]", "+grpo.rewards.brevity=1.0"))
    assert cfg.grpo.rewards == {"format_partial": 0.5, "correctness_partial": 1.0, "brevity": 1.0}


@pytest.mark.parametrize("overrides, expect", [
    (("+grpo.rewards.brevity=1.0",), "grpo.rewards.brevity=1.0: unknown reward; use names from format, correctness, "
                                     "format_partial, correctness_partial (a function of your own: name its module"),
    (("grpo.reward_modules=[nowhere_rewards]", "+grpo.rewards.brevity=1.0"),
     "grpo.reward_modules entry 'nowhere_rewards' cannot be imported (no module named 'nowhere_rewards'); put the "
     "folder holding it on PYTHONPATH"),
    (("grpo.reward_modules=[rewards.py]", "+grpo.rewards.brevity=1.0"), "is not a module name"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.brevty=1.0"), "unknown reward; use names from format, correctness, "
                                                                 "format_partial, correctness_partial, brevity"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.no_kwargs=1.0"), "{m}.no_kwargs takes no **kwargs"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.needs_solution=1.0"),
     "{m}.needs_solution requires 'solution', which TRL does not pass"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.positional=1.0"), "takes 'completions' positionally only"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.format=1.0"), "both the built-in reward and {m}.format"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.Judge=1.0"), "{m}.Judge is a class"),
    (("grpo.reward_modules=[{m},{m}]", "+grpo.rewards.brevity=1.0"), "names a module twice"),
    (("grpo.reward_modules=[{m}]", "+grpo.rewards.brevity=0"), "grpo.rewards.brevity=0.0: a weight must be"),
])
def test_a_bad_reward_module_is_one_line_at_start_up(module, overrides, expect):
    line = refused("model=tiny", *(o.replace("{m}", module) for o in overrides))
    assert line.startswith("grpo-rank: config error: ") and "\n" not in line
    assert expect.replace("{m}", module) in line, line


def test_a_module_that_fails_on_import_says_why(tmp_path, monkeypatch):
    (tmp_path / "broken_rewards_x1.py").write_text("raise RuntimeError('needs a GPU judge')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = refused("model=tiny", "grpo.reward_modules=[broken_rewards_x1]", "+grpo.rewards.judge=1.0")
    assert "importing it raised RuntimeError: needs a GPU judge; fix the module" in line


def test_the_module_is_in_the_identity_and_its_source_in_the_hashes(module, tmp_path):
    plain = typed("model=tiny")
    cfg = typed("model=tiny", f"grpo.reward_modules=[{module}]", "+grpo.rewards.brevity=1.0")
    assert identity(cfg, tmp_path).config_hash != identity(plain, tmp_path).config_hash
    before = (identity(cfg, tmp_path).config_hash, profile_key(cfg, [8] * 12, 2), module_versions([module]))
    path = tmp_path / f"{module}.py"
    path.write_text(path.read_text() + "\n# a changed reward is other code\n")
    after = (identity(cfg, tmp_path).config_hash, profile_key(cfg, [8] * 12, 2), module_versions([module]))
    assert all(a != b for a, b in zip(before, after))
    assert identity(plain, tmp_path).config_hash == identity(typed("model=tiny"), tmp_path).config_hash


def test_a_tiny_grpo_job_trains_with_the_users_reward(module, tmp_path, cache_dir):
    """task=hf on a lab's jsonl, the built-in format reward plus the module's, scored with math-verify."""
    import json

    from grpo_rank.pipeline.job import run_job

    rows = [{"prompt": f"What is {a} plus {b}?", "target": str(a + b)} for a in range(2, 8) for b in range(1, 4)]
    (tmp_path / "data").mkdir()
    for split in ("train", "test"):
        (tmp_path / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = prepare(compose(*TINY, "task=hf", f"task.path={tmp_path}/data", "task.prompt_column=prompt",
                          "task.answer_column=target", "task.answer_extractor=as_is", "grpo.save_steps=0",
                          f"grpo.reward_modules=[{module}]", "~grpo.rewards.correctness_partial",
                          "+grpo.rewards.brevity=1.0", "eval.scoring=math_verify", "eval.n=4",
                          "tracking.mode=disabled", f"profile.cache_dir={tmp_path}/profiles"))
    job_dir = tmp_path / "job"
    result = run_job(cfg, job_dir)
    assert result.status == "ok", result.error
    calls = sys.modules[module].CALLS
    assert calls and {c["n"] for c in calls} == {8}  # 2 prompts x 4 completions per step (TINY)
    assert set(calls[0]["answer"]) <= {r["target"] for r in rows}  # the gold answers, as the dataset gives them
    assert {"prompts", "completion_ids", "trainer_state", "id"} <= set(calls[0]["keys"])
    log = [r for r in read_jsonl(job_dir / TRAIN_LOG) if r["phase"] == "train"]
    assert len(log) == 2 and all("rewards/brevity/mean" in r for r in log)
    record = read_result(job_dir)
    assert record.config["grpo"]["reward_modules"] == [module]
    assert record.job.config_hash == identity(cfg, job_dir).config_hash
    assert record.eval.scoring == "math_verify" and record.eval.generation["math_verify_timeouts"] == 0
    outcomes = read_jsonl(job_dir / OUTCOMES)
    assert len(outcomes) == 4 and all(o["gold"] in {r["target"] for r in rows} for o in outcomes)
    assert record.eval.correct == sum(o["correct"] for o in outcomes)
