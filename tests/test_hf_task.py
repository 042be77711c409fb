"""`task=hf`: any dataset with a question and an answer column, from local jsonl, parquet and csv files the
tests write (a MATH-style problem/solution set with \\boxed{} answers, a lab's jsonl, a csv), a hub dataset
(a local dataset folder through `datasets`, as a hub id is read), and GSM8K's shared files, which must
give exactly what task=gsm8k gives. Bad data is refused in one line before any model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpo_rank.data import models
from grpo_rank.data.hf_task import EXTRACTORS, boxed
from grpo_rank.data.tasks import gold_completion, load_split
from grpo_rank.errors import InputError
from grpo_rank.run import prepare
from tests.conftest import GSM8K, compose, refused, run_cli, typed

# A MATH-style set: the gold answer is the last \boxed{} of the worked solution, nested braces and all
MATH = [
    {"problem": "Simplify $\\sin 45^\\circ$.", "solution": "It is $\\boxed{\\frac{\\sqrt{2}}{2}}$.", "level": 1},
    {"problem": "Solve $x^2 = 4$ for $x > 0$.", "solution": "So $x = \\boxed{2}$.", "level": 1},
    {"problem": "Which interval? $1 < x < 2$", "solution": "First \\boxed{1}, then \\boxed{(1, 2)}.", "level": 2},
]
# A lab's jsonl: its own column names, the answer as is (numbers in JSON stay numbers)
LAB = [{"id": 1, "prompt": "What is 6 times 7?", "target": 42, "source": "lab"},
       {"id": 2, "prompt": "Half of 9?", "target": "4.5", "source": "lab"}]
CSV_ROWS = [{"q": "Tom has 3 pens and buys 4 more. How many pens?", "a": "He has 3 + 4 = 7 pens, so 7."},
            {"q": "A box holds 1,200 nails; 200 are used. How many are left?", "a": "1,200 - 200 = 1,000"}]


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


MATH_SETTINGS = ("task.prompt_column=problem", "task.answer_column=solution", "task.answer_extractor=boxed",
                 "eval.scoring=math_verify")
LAB_SETTINGS = ("task.prompt_column=prompt", "task.answer_column=target", "task.answer_extractor=as_is")
CSV_SETTINGS = ("task.prompt_column=q", "task.answer_column=a", "task.answer_extractor=last_number")


def hf(tmp: Path, *settings: str):
    return typed("model=tiny", "task=hf", f"task.path={tmp}", *settings)


def test_parquet_math_style_boxed_answers(tmp_path):
    write_parquet(tmp_path / "train.parquet", MATH)
    write_parquet(tmp_path / "test.parquet", MATH[:2])
    cfg = hf(tmp_path, *MATH_SETTINGS)
    train, test = load_split(cfg.task, "train"), load_split(cfg.task, "test")
    assert [e.answer for e in train] == ["\\frac{\\sqrt{2}}{2}", "2", "(1, 2)"]
    assert [e.question for e in test] == [r["problem"] for r in MATH[:2]]
    # sft trains on the whole worked solution, then the gold answer in the study's format
    assert gold_completion(train[1]) == "<think>So $x = \\boxed{2}$.</think><answer>2</answer>"
    assert load_split(hf(tmp_path, *MATH_SETTINGS, "task.train_size=2").task, "train") == train[:2]


def test_lab_jsonl_as_is_with_its_own_column_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", LAB)
    write_jsonl(tmp_path / "test.jsonl", [LAB[0], "", LAB[1]])  # a blank line is no row
    test = load_split(hf(tmp_path, *LAB_SETTINGS).task, "test")
    assert [(e.question, e.answer, e.solution) for e in test] == [
        ("What is 6 times 7?", "42", ""), ("Half of 9?", "4.5", "")]
    assert len({e.id for e in test}) == 2


def test_csv_last_number_drops_thousands_separators(tmp_path):
    write_csv(tmp_path / "train.csv", CSV_ROWS)
    write_csv(tmp_path / "test.csv", CSV_ROWS)
    test = load_split(hf(tmp_path, *CSV_SETTINGS).task, "test")
    assert [e.answer for e in test] == ["7", "1000"]
    assert test[0].solution == CSV_ROWS[0]["a"]


def test_split_names_patterns_and_the_hub_layout(tmp_path):
    """Files named by the dataset's own split names, a {split} pattern, and the hub's data/<split>-*.parquet."""
    write_jsonl(tmp_path / "a" / "training.jsonl", LAB)
    write_jsonl(tmp_path / "a" / "validation.jsonl", LAB[:1])
    cfg = hf(tmp_path / "a", *LAB_SETTINGS, "task.train_split=training", "task.test_split=validation")
    assert len(load_split(cfg.task, "train")) == 2 and len(load_split(cfg.task, "test")) == 1
    write_jsonl(tmp_path / "b" / "math_test.jsonl", MATH)
    cfg = typed("model=tiny", "task=hf", f"task.path='{tmp_path}/b/math_{{split}}.jsonl'", *MATH_SETTINGS)
    assert [e.answer for e in load_split(cfg.task, "test")][:2] == ["\\frac{\\sqrt{2}}{2}", "2"]
    write_parquet(tmp_path / "c" / "data" / "test-00000-of-00002.parquet", MATH[:1])
    write_parquet(tmp_path / "c" / "data" / "test-00001-of-00002.parquet", MATH[1:])
    assert len(load_split(hf(tmp_path / "c", *MATH_SETTINGS).task, "test")) == 3


def test_a_hub_dataset_through_datasets(tmp_path):
    """task.hub_id goes through datasets.load_dataset, which reads a dataset folder as it reads a hub id."""
    write_jsonl(tmp_path / "ds" / "train.jsonl", LAB)
    write_jsonl(tmp_path / "ds" / "test.jsonl", LAB[:1])
    cfg = typed("model=tiny", "task=hf", f"task.hub_id={tmp_path}/ds", *LAB_SETTINGS)
    assert [e.answer for e in load_split(cfg.task, "train")] == ["42", "4.5"]
    assert load_split(cfg.task, "test") == load_split(hf(tmp_path / "ds", *LAB_SETTINGS).task, "test")
    with pytest.raises(InputError, match="task.prompt_column='question' is not a column of task.hub_id="):
        load_split(typed("model=tiny", "task=hf", f"task.hub_id={tmp_path}/ds").task, "test")
    with pytest.raises(InputError, match="split 'dev' could not be loaded .* check task.hub_id"):
        load_split(typed("model=tiny", "task=hf", f"task.hub_id={tmp_path}/ds", "task.test_split=dev",
                         *LAB_SETTINGS).task, "test")


def test_hub_golds_are_checked_before_the_model_loads(tmp_path, monkeypatch):
    """A hub dataset is only read when the job runs: load_data checks its golds before load_model."""
    from grpo_rank.pipeline.job import load_data

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the model loaded first"))
    write_jsonl(tmp_path / "ds" / "train.jsonl", LAB)
    write_jsonl(tmp_path / "ds" / "test.jsonl", [{"prompt": "Expand (x+1)^2 - 2x - 1.", "target": "x^2"}])
    cfg = typed("model=tiny", "task=hf", f"task.hub_id={tmp_path}/ds", *LAB_SETTINGS)
    with pytest.raises(InputError, match=r"test row 1: the gold answer 'x\^2' .* is not one number"):
        load_data(cfg)
    data = load_data(typed("model=tiny", "task=hf", f"task.hub_id={tmp_path}/ds", *LAB_SETTINGS,
                           "eval.scoring=math_verify"))
    assert data["test"][0].answer == "x^2" and len(data["train"]) == 2


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_through_hf_is_the_gsm8k_task():
    via_hf = typed("task=hf", f"task.path={GSM8K}").task
    assert load_split(via_hf, "test") == load_split(typed("task=gsm8k", f"task.path={GSM8K}").task, "test")


@pytest.mark.parametrize("text, gold", [
    ("so \\boxed{\\frac{1}{\\sqrt{2}}} at last", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{1} then \\boxed{{x}^{2}+1}", "{x}^{2}+1"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\frac{1}{2}", None),  # never closed
    ("\\boxed{}", None),
    ("no box", None),
])
def test_boxed_keeps_nested_braces(text, gold):
    assert boxed(text) == gold


@pytest.mark.parametrize("extractor, text, gold", [
    ("hash", "3 + 4 = 7\n#### 1,007", "1007"),
    ("hash", "#### (1, 2)", "(1, 2)"),  # only a number's separators go
    ("hash", "no marker", None),
    ("last_number", "From 1,200 take 200: 1,000.", "1000"),
    ("last_number", "-3.5 degrees", "-3.5"),
    ("last_number", "none", None),
    ("as_is", "  \\frac{1}{2} ", "\\frac{1}{2}"),
    ("as_is", "   ", None),
])
def test_extractors_known_answers(extractor, text, gold):
    assert EXTRACTORS[extractor][0](text) == gold


def lab_dir(train=LAB, test=LAB):
    def build(tmp: Path) -> None:
        if train is not None:
            write_jsonl(tmp / "train.jsonl", train)
        if test is not None:
            write_jsonl(tmp / "test.jsonl", test)
    return build


def math_dir(rows=MATH, kind="parquet"):
    def build(tmp: Path) -> None:
        write = write_parquet if kind == "parquet" else write_csv
        write(tmp / f"train.{kind}", rows)
        write(tmp / f"test.{kind}", rows)
    return build


BASE = ("model=tiny", "task=hf", "task.path={tmp}")
LAB_CASE = (*BASE, *LAB_SETTINGS)
MATH_CASE = (*BASE, *MATH_SETTINGS)
TEMPLATE = '{% for m in messages %}{{ m["content"] }}{% endfor %}'
CASES = {
    "no data named": (("model=tiny", "task=hf"), None, "task.path=None: task=hf needs local files or a hub dataset"),
    "no prompt column set": ((*LAB_CASE, "task.prompt_column=null"), lab_dir(), "task.prompt_column=None: task=hf needs it"),
    "unknown extractor": ((*LAB_CASE, "task.answer_extractor=regex"), lab_dir(),
                          "task.answer_extractor='regex': unknown answer extractor; use one of hash, boxed"),
    "not a folder": ((*LAB_CASE[:2], "task.path={tmp}/nowhere", *LAB_SETTINGS), None, "is not a folder"),
    "one file": ((*LAB_CASE[:2], "task.path={tmp}/train.jsonl", *LAB_SETTINGS), lab_dir(), "is one file"),
    "no test split": (LAB_CASE, lab_dir(test=None), "has no test.jsonl, test.parquet or test.csv"),
    "pattern matches nothing": ((*LAB_CASE[:2], "task.path='{tmp}/x_{split}.jsonl'", *LAB_SETTINGS), lab_dir(),
                                "no file matches"),
    "empty split": (LAB_CASE, lab_dir(test=[""]), "the test split ('test') holds no rows"),
    "jsonl row lacks the column": (LAB_CASE, lab_dir(test=[{"question": "q", "target": 1}]),
                                   "test.jsonl line 1: no column 'prompt' (task.prompt_column)"),
    "csv lacks the column": ((*BASE, "task.prompt_column=question", "task.answer_column=solution",
                              "task.answer_extractor=boxed", "eval.scoring=math_verify"), math_dir(kind="csv"),
                             "task.prompt_column='question' is not a column of"),
    "parquet lacks the column": ((*MATH_CASE, "task.answer_column=answer"), math_dir(),
                                 "task.answer_column='answer' is not a column of"),
    "not json": (LAB_CASE, lab_dir(test=["{oops"]), "test.jsonl line 1 is not JSON"),
    "empty question": (LAB_CASE, lab_dir(test=[{"prompt": " ", "target": 1}]), "the question (task.prompt_column"),
    "empty answer": (LAB_CASE, lab_dir(test=[{"prompt": "q", "target": None}]), "the answer (task.answer_column"),
    "a list, not text": (LAB_CASE, lab_dir(test=[{"prompt": "q", "target": [1, 2]}]), "holds a list, not text"),
    "no boxed answer": (MATH_CASE, math_dir([*MATH, {"problem": "p", "solution": "It is 4.", "level": 3}]),
                        "task.answer_extractor=boxed finds no gold answer (a closed \\boxed{...})"),
    "gold not a number for eval.scoring=any": (LAB_CASE, lab_dir(test=[{"prompt": "q", "target": "x^2"}]),
                                               "the gold answer 'x^2' (task.answer_column='target' with "
                                               "task.answer_extractor=as_is) is not one number, which eval.scoring=any"),
    "gold not a number for a correctness reward": (
        (*MATH_CASE,), math_dir(), "train.parquet row 1: the gold answer '\\\\frac{\\\\sqrt{2}}{2}'"),
    "gold math-verify cannot read": ((*LAB_CASE, "eval.scoring=math_verify"),
                                     lab_dir(test=[{"prompt": "q", "target": "}{"}]),
                                     "math-verify finds no answer in it"),
    "chat template file missing": ((*LAB_CASE, "task.chat_template={tmp}/chat.jinja"), lab_dir(),
                                   "is neither a Jinja template"),
    "chat template not Jinja": ((*LAB_CASE, "task.chat_template='{% for m in messages %}'"), lab_dir(),
                                "task.chat_template: the template does not compile"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_data_is_one_line_before_any_model_loads(name, tmp_path, no_model_loads):
    overrides, files, expect = CASES[name]
    if files:
        files(tmp_path)
    line = refused([o.replace("{tmp}", str(tmp_path)) for o in overrides])
    assert "\n" not in line and line.startswith("grpo-rank: ")
    assert expect in line, line


@pytest.mark.parametrize("overrides, files", [
    (LAB_CASE, lab_dir()),
    # non-numeric golds: math-verify scores them; a reward that reads the gold as a number is not used
    ((*MATH_CASE, "~grpo.rewards.correctness_partial"), math_dir()),
    ((*MATH_CASE, "strategy=none"), math_dir()),  # the base model trains on nothing: no reward reads the golds
    ((*LAB_CASE, f"task.chat_template='{TEMPLATE}'"), lab_dir()),
    ((*LAB_CASE, "task.chat_template={tmp}/chat.jinja"), lambda tmp: (lab_dir()(tmp), (tmp / "chat.jinja").write_text(
        TEMPLATE))),
])
def test_good_data_passes(overrides, files, tmp_path, no_model_loads):
    files(tmp_path)
    cfg = prepare(compose(*(o.replace("{tmp}", str(tmp_path)) for o in overrides)))
    assert cfg.task.name == "hf"


@pytest.mark.slow  # the command imports torch before it reads its input (~10 s alone, ~45 s on a busy machine)
def test_the_command_refuses_bad_data_in_one_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", LAB)
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "q", "answer": 1}])
    proc = run_cli(["grpo_rank.run", "model=tiny", "task=hf", f"task.path={tmp_path}", *LAB_SETTINGS,
                    f"hydra.run.dir={tmp_path}/job"], cwd=tmp_path, env_extra={"WANDB_MODE": "disabled"}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("grpo-rank: ")]
    assert len(lines) == 1 and "test.jsonl line 1: no column 'target' (task.answer_column)" in lines[0]
    assert "Traceback" not in proc.stderr and "loading model" not in proc.stdout + proc.stderr


def test_the_chat_template_override_reaches_the_tokenizer(tmp_path):
    """task.chat_template replaces the tokenizer's own template, for training and evaluation alike."""
    from grpo_rank.data.tasks import messages
    from grpo_rank.pipeline.job import load_model

    (tmp_path / "plain.jinja").write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    cfg = typed("model=tiny", f"task.chat_template={tmp_path}/plain.jinja")
    _, tokenizer = load_model(cfg)
    text = tokenizer.apply_chat_template(messages("What is 2+2?", "Be brief.", few_shot=False), tokenize=False)
    assert text == "[system] Be brief.\n[user] What is 2+2?\n"
    _, own = load_model(typed("model=tiny"))
    assert own.chat_template == models.TINY_CHAT_TEMPLATE
