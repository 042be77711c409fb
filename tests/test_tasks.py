"""Tasks: GSM8K through the datasets loader from the shared local files, and the synthetic task."""

from __future__ import annotations

import pytest

from grpo_rank.config.schema import TaskConfig
from grpo_rank.data.tasks import gsm8k_gold, load_split, messages, prompt_dataset
from grpo_rank.evaluation.evaluate import wilson_interval
from tests.conftest import GSM8K


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_local_files_through_datasets():
    cfg = TaskConfig(name="gsm8k", path=str(GSM8K))
    test = load_split(cfg, "test")
    assert len(test) == 1319
    assert test[0].answer == "18" and "Janet" in test[0].question
    train = load_split(TaskConfig(name="gsm8k", path=str(GSM8K), train_size=100), "train")
    assert len(train) == 100


def test_gsm8k_gold_drops_separators():
    assert gsm8k_gold("so 1,000 + 5\n#### 1,005") == "1005"


def test_arithmetic_is_deterministic_disjoint_and_solvable():
    cfg = TaskConfig(name="arithmetic", train_size=200)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert train == load_split(cfg, "train") and test == load_split(cfg, "test")
    assert not {e.question for e in train} & {e.question for e in test}
    assert len({e.id for e in test}) == len(test)
    assert all(int(e.answer) >= 0 for e in train + test)


def test_prompts_ask_for_the_study_format():
    ds = prompt_dataset(load_split(TaskConfig(name="arithmetic", train_size=4), "train"), TaskConfig(
        name="arithmetic").system_prompt)
    prompt = ds[0]["prompt"]
    assert "<think>" in prompt[0]["content"] and "<answer>" in prompt[0]["content"]
    assert prompt[-1]["role"] == "user" and ds[0]["answer"].isdigit()
    assert messages("q", "s", few_shot=False) == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.28
    lo, hi = wilson_interval(149, 200)  # the study's 74.5% at n=200
    assert 0.68 < lo < 0.69 and 0.80 < hi < 0.81


def test_few_shot_is_a_task_option_off_for_the_paper():
    from grpo_rank.data.tasks import SHOT, messages
    from tests.conftest import typed

    with_shot, without = messages("Q?", "sys", True), messages("Q?", "sys", False)
    assert with_shot[1:-1] == SHOT and [m["role"] for m in without] == ["system", "user"]
    assert typed().task.few_shot is True and typed("experiment=paper").task.few_shot is False
