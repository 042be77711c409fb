"""Tasks, keyed by `task.name`: GSM8K (hub or local jsonl through the same `datasets` loader) and a
synthetic arithmetic word-problem task generated from a seed, for runs with no download.

Every task yields `Example(id, question, answer)` with `answer` the gold number as a string, and
every prompt asks for the study's format `<think>...</think><answer>...</answer>`. The evaluation
split is the same for every job of a task (it does not depend on the run seed), so outcomes can be
paired question by question across strategies and seeds.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from .config import TaskConfig


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    answer: str


def _qid(question: str) -> str:
    return hashlib.sha1(question.encode()).hexdigest()[:12]


NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo", "Mia", "Noor"]
ITEMS = ["apples", "books", "coins", "marbles", "pens", "shells", "stamps", "cards", "eggs", "stickers"]


def _one_step(rng: random.Random, max_operand: int) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, max_operand), rng.randint(1, max_operand)
    kind = rng.choice(["add", "add", "sub", "mul"])
    if kind == "add":
        return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?", a - b
    a, b = rng.randint(2, 9), rng.randint(2, 9)  # keep products small enough for a 135M model
    return f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b


def _two_step(rng: random.Random, max_operand: int) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, max_operand), rng.randint(1, max_operand), rng.randint(1, max_operand)
    c = min(c, a + b)
    return (f"{name} has {a} {item}, gets {b} more, then gives away {c}. "
            f"How many {item} does {name} have left?", a + b - c)


def arithmetic_examples(n: int, seed: int | str, max_operand: int, max_ops: int,
                        exclude: set[str] = frozenset()) -> list[Example]:
    rng = random.Random(f"grpo-rank/arithmetic/{seed}")
    out, seen = [], set(exclude)
    for _ in range(50 * n):  # bounded: the question space is finite for small operands
        if len(out) == n:
            break
        two = max_ops >= 2 and rng.random() < 0.5
        q, a = (_two_step if two else _one_step)(rng, max_operand)
        if q in seen:
            continue
        seen.add(q)
        out.append(Example(_qid(q), q, str(a)))
    return out


def load_arithmetic(cfg: TaskConfig, split: str) -> list[Example]:
    test = arithmetic_examples(512, "test", cfg.max_operand, cfg.max_ops)
    if split == "test":
        return test
    return arithmetic_examples(cfg.train_size or 512, "train", cfg.max_operand, cfg.max_ops,
                               exclude={e.question for e in test})


def gsm8k_gold(answer: str) -> str:
    """The number after '####' in a GSM8K answer, without thousands separators."""
    return answer.split("####")[-1].strip().replace(",", "")


def load_gsm8k(cfg: TaskConfig, split: str) -> list[Example]:
    from datasets import load_dataset

    if cfg.path:
        folder = Path(cfg.path)
        files = {s: str(folder / f"{s}.jsonl") for s in ("train", "test") if (folder / f"{s}.jsonl").exists()}
        if split not in files:
            raise FileNotFoundError(f"task.path={cfg.path!r} has no {split}.jsonl")
        ds = load_dataset("json", data_files={split: files[split]}, split=split)
    else:
        ds = load_dataset(cfg.hub_id, cfg.hub_config, split=split)
    examples = [Example(_qid(r["question"]), r["question"], gsm8k_gold(r["answer"])) for r in ds]
    if split == "train" and cfg.train_size:
        examples = examples[: cfg.train_size]
    return examples


TASKS = {"gsm8k": load_gsm8k, "arithmetic": load_arithmetic}


def load_split(cfg: TaskConfig, split: str) -> list[Example]:
    return TASKS[cfg.name](cfg, split)


# One worked exchange before the question: a 135M model copies the answer tags from it, and never
# produces them from the instruction alone (measured: 0 of 64 samples).
SHOT = [
    {"role": "user", "content": "Sam has 3 kites and buys 4 more. How many kites does Sam have now?"},
    {"role": "assistant", "content": "<think>3 + 4 = 7</think><answer>7</answer>"},
]


def messages(question: str, system_prompt: str, few_shot: bool = True) -> list[dict]:
    shot = SHOT if few_shot else []
    return [{"role": "system", "content": system_prompt}, *shot, {"role": "user", "content": question}]


def prompt_dataset(examples: list[Example], system_prompt: str):
    """A `datasets.Dataset` in TRL's conversational format; `answer` reaches the reward functions."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": messages(e.question, system_prompt), "answer": e.answer, "id": e.id} for e in examples
    ])
