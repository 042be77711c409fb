"""Tasks, keyed by `task.name`: GSM8K (hub or local jsonl through the same `datasets` loader), a
synthetic arithmetic word-problem task generated from a seed, for runs with no download, and `hf`, any
dataset with a question and an answer column (hf_task.py).

Every task yields `Example(id, question, answer, solution)` with `answer` the gold answer as a string
(a number for gsm8k and arithmetic) and `solution` its worked reasoning (what `algorithm=sft` trains
on, as `gold_completion`), and every prompt asks for the study's format `<think>...</think><answer>...</answer>`. The evaluation
split is the same for every job of a task (it does not depend on the run seed), so outcomes can be
paired question by question across strategies and seeds.

`TASKS` is the registry `task.name` is checked against (config.py imports it, so this module imports
neither torch nor datasets at its top); each task names its splits, which `eval.split` is checked
against. `check_split` reads a local data file through without `datasets`, so a missing, empty or
malformed file is an InputError naming the file and line before any model loads (preflight.py).
`task.chat_template` replaces the tokenizer's chat template (`chat_template_text`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_rank.data import hf_task
from grpo_rank.data.examples import CALCULATOR_RE, Example, _qid, gold_completion  # noqa: F401 - re-exported
from grpo_rank.errors import InputError

if TYPE_CHECKING:  # config.py imports this module for its registry
    from grpo_rank.config.schema import TaskConfig


NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo", "Mia", "Noor"]
ITEMS = ["apples", "books", "coins", "marbles", "pens", "shells", "stamps", "cards", "eggs", "stickers"]


# each generator returns (question, answer, worked solution); the solution draws nothing from `rng`, so the
# questions are the same as before solutions existed
def _one_step(rng: random.Random, max_operand: int) -> tuple[str, int, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, max_operand), rng.randint(1, max_operand)
    kind = rng.choice(["add", "add", "sub", "mul"])
    if kind == "add":
        return (f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b,
                f"{a} + {b} = {a + b}")
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return (f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?", a - b,
                f"{a} - {b} = {a - b}")
    a, b = rng.randint(2, 9), rng.randint(2, 9)  # keep products small enough for a 135M model
    return (f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b,
            f"{a} * {b} = {a * b}")


def _two_step(rng: random.Random, max_operand: int) -> tuple[str, int, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, max_operand), rng.randint(1, max_operand), rng.randint(1, max_operand)
    c = min(c, a + b)
    return (f"{name} has {a} {item}, gets {b} more, then gives away {c}. "
            f"How many {item} does {name} have left?", a + b - c, f"{a} + {b} = {a + b}, {a + b} - {c} = {a + b - c}")


def arithmetic_examples(n: int, seed: int | str, max_operand: int, max_ops: int,
                        exclude: set[str] = frozenset()) -> list[Example]:
    rng = random.Random(f"grpo-rank/arithmetic/{seed}")
    out, seen = [], set(exclude)
    for _ in range(50 * n):  # bounded: the question space is finite for small operands
        if len(out) == n:
            break
        two = max_ops >= 2 and rng.random() < 0.5
        q, a, work = (_two_step if two else _one_step)(rng, max_operand)
        if q in seen:
            continue
        seen.add(q)
        out.append(Example(_qid(q), q, str(a), work))
    return out


def load_arithmetic(cfg: TaskConfig, split: str) -> list[Example]:
    test = arithmetic_examples(512, "test", cfg.max_operand, cfg.max_ops)
    if split == "test":
        return test
    return arithmetic_examples(cfg.train_size or 512, "train", cfg.max_operand, cfg.max_ops,
                               exclude={e.question for e in test})


GOLD_RE = re.compile(r"-?\d+(?:\.\d+)?")  # every GSM8K gold (train and test) is an integer after '####'
GSM8K_ROW = "every row needs \"question\" and \"answer\" ending in '#### <number>' (GSM8K's jsonl format)"




def gsm8k_solution(answer: str) -> str:
    """The worked reasoning of a GSM8K answer: the text before '####', calculator annotations removed."""
    return CALCULATOR_RE.sub("", answer.split("####")[0]).strip()


def gsm8k_gold(answer: str) -> str:
    """The number after '####' in a GSM8K answer, without thousands separators."""
    return answer.split("####")[-1].strip().replace(",", "")


def gsm8k_example(row, where: str) -> Example:
    """One GSM8K row as an Example; InputError naming `where` (file and line) when it is not one."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: a row is a JSON {type(row).__name__}, not an object; {GSM8K_ROW}")
    question, answer = row.get("question"), row.get("answer")
    for name, value in (("question", question), ("answer", answer)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: no {name!r} text; {GSM8K_ROW}")
    if "####" not in answer or not GOLD_RE.fullmatch(gsm8k_gold(answer)):
        raise InputError(f"{where}: the answer does not end in '#### <number>'; {GSM8K_ROW}")
    return Example(_qid(question), question, gsm8k_gold(answer), gsm8k_solution(answer))


def split_file(cfg: TaskConfig, split: str) -> Path:
    """The local jsonl of a split under `task.path`; InputError when it is not there."""
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise InputError(f"task.path={cfg.path!r} is not a folder; point it at the folder holding "
                         "train.jsonl and test.jsonl")
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise InputError(f"task.path={cfg.path!r} has no {split}.jsonl; the folder needs train.jsonl and "
                         "test.jsonl (GSM8K's jsonl files)")
    return path


def check_split(cfg: TaskConfig, split: str) -> list[tuple[str, Example]]:
    """Reads a split's local file through and raises InputError (file and line) at the first bad row.
    Hub splits are not checked here: that would download them. Returns the `hf` task's rows with where
    each is (preflight checks their gold answers against the job's scorer and rewards), else []."""
    known = TASKS[cfg.name].splits
    if split not in known:
        raise InputError(f"split {split!r} of task {cfg.name!r} is unknown; use one of {', '.join(known)}")
    if cfg.name == "hf" and cfg.path:
        return hf_task.located(cfg, split)
    if cfg.name != "gsm8k" or not cfg.path:
        return []
    path = split_file(cfg, split)
    rows = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{where} is not JSON; {GSM8K_ROW}") from None
            gsm8k_example(row, where)
            rows += 1
    if rows == 0:
        raise InputError(f"{path} holds no rows; {GSM8K_ROW}")
    return []


def load_gsm8k(cfg: TaskConfig, split: str) -> list[Example]:
    from datasets import load_dataset  # seconds to import; only GSM8K jobs pay for it

    if cfg.path:
        check_split(cfg, split)  # datasets' own errors on an empty or ragged file are no help to a user
        source = str(split_file(cfg, split))
        ds = load_dataset("json", data_files={split: source}, split=split)
    else:
        ds = load_dataset(cfg.hub_id, cfg.hub_config, split=split)
        source = f"task.hub_id={cfg.hub_id!r} split {split}"
    examples = [gsm8k_example(r, f"{source} row {i + 1}") for i, r in enumerate(ds)]
    if not examples:
        raise InputError(f"{source} holds no rows; {GSM8K_ROW}")
    if split == "train" and cfg.train_size:
        examples = examples[: cfg.train_size]
    return examples


def load_hf(cfg: TaskConfig, split: str) -> list[Example]:
    return hf_task.load_hf(cfg, split)


@dataclass(frozen=True)
class Task:
    load: Callable[[TaskConfig, str], list[Example]]
    splits: tuple[str, ...]  # what eval.split may name


TASKS: dict[str, Task] = {
    "gsm8k": Task(load_gsm8k, ("train", "test")),
    "arithmetic": Task(load_arithmetic, ("train", "test")),
    "hf": Task(load_hf, ("train", "test")),  # task.train_split / task.test_split name them in the dataset
}


def load_split(cfg: TaskConfig, split: str) -> list[Example]:
    task = TASKS[cfg.name]
    if split not in task.splits:  # validate() says so first; a direct caller must not get another split
        raise InputError(f"split {split!r} of task {cfg.name!r} is unknown; use one of {', '.join(task.splits)}")
    return task.load(cfg, split)


# One worked exchange before the question: a 135M model copies the answer tags from it, and never
# produces them from the instruction alone (measured: 0 of 64 samples).
SHOT = [
    {"role": "user", "content": "Sam has 3 kites and buys 4 more. How many kites does Sam have now?"},
    {"role": "assistant", "content": "<think>3 + 4 = 7</think><answer>7</answer>"},
]


def chat_template_text(cfg: TaskConfig) -> str | None:
    """`task.chat_template`: a Jinja template itself (it holds `{%` or `{{`), or the path of a file holding
    one; None keeps the tokenizer's own. InputError when the file is not there."""
    value = cfg.chat_template
    if value is None or "{%" in value or "{{" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise InputError(f"task.chat_template={value!r} is neither a Jinja template (no {{% or {{{{ in it) nor a "
                         "file; give the template text or the path of a .jinja file")
    return path.read_text(encoding="utf-8")


def messages(question: str, system_prompt: str, few_shot: bool = True) -> list[dict]:
    shot = SHOT if few_shot else []
    return [{"role": "system", "content": system_prompt}, *shot, {"role": "user", "content": question}]


def prompt_dataset(examples: list[Example], system_prompt: str, few_shot: bool = True):
    """A `datasets.Dataset` in TRL's conversational format; `answer` reaches the reward functions."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": messages(e.question, system_prompt, few_shot), "answer": e.answer, "id": e.id} for e in examples
    ])


def solution_dataset(examples: list[Example], system_prompt: str, few_shot: bool = True):
    """A `datasets.Dataset` in TRL's conversational prompt-completion format, the completion being the gold
    solution in the answer format (`algorithm=sft`); SFTTrainer then trains on the completion tokens only."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": messages(e.question, system_prompt, few_shot),
         "completion": [{"role": "assistant", "content": gold_completion(e)}], "answer": e.answer, "id": e.id}
        for e in examples
    ])
