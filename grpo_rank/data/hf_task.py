"""`task=hf`: any dataset with a question column and an answer column, from local files or the hub.

    python -m grpo_rank.run task=hf task.path=data/ task.prompt_column=problem \\
        task.answer_column=solution task.answer_extractor=boxed eval.scoring=math_verify

Where the rows come from:
- `task.path`, a folder: per split, `<name>.jsonl`, `<name>.parquet` or `<name>.csv` (also `<name>-*.<ext>`
  and the hub's layout under `data/`), `<name>` being `task.train_split` / `task.test_split`;
- `task.path` with `{split}` in it: a file pattern (globs allowed), e.g. `data/math_{split}.jsonl`;
- else `task.hub_id` (+ `task.hub_config`) through `datasets.load_dataset`, the splits by those names.

Every row gives `task.prompt_column` (the question, as text) and `task.answer_column`, from which
`task.answer_extractor` (EXTRACTORS) takes the gold answer: `hash` (after GSM8K's '####'), `boxed`
(the last `\\boxed{...}`, nested braces kept), `last_number`, `as_is` (the whole cell). A row without
the columns, with an empty question, or whose answer the extractor finds nothing in is an InputError
naming the file and line (or the hub split and row) and the setting to change. Local files are read
without `datasets` (json, csv, pyarrow), so preflight.py reads them through before any model loads;
a hub dataset is checked when the job loads it, which job.py does before the model.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_rank.data.examples import CALCULATOR_RE, Example, _qid
from grpo_rank.errors import InputError

if TYPE_CHECKING:
    from grpo_rank.config.schema import TaskConfig

FORMATS = ("jsonl", "parquet", "csv")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _hash(text: str) -> str | None:
    if "####" not in text:
        return None
    gold = text.split("####")[-1].strip()
    # GSM8K writes 1,005 for 1005; only a number's separators go, so '(1, 2)' keeps its comma
    return gold.replace(",", "") if _THOUSANDS_RE.fullmatch(gold) else (gold or None)


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces kept; None when there is
    none or its brace never closes."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    start = text.index("{", start) + 1
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip() or None
    return None


def _last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text)
    return found[-1].rstrip(",").replace(",", "") if found else None


def _as_is(text: str) -> str | None:
    return text.strip() or None


# task.answer_extractor -> (gold answer from the answer cell, or None; what it looks for, for the error line)
EXTRACTORS: dict[str, tuple[Callable[[str], str | None], str]] = {
    "hash": (_hash, "an answer after '####'"),
    "boxed": (boxed, "a closed \\boxed{...}"),
    "last_number": (_last_number, "a number"),
    "as_is": (_as_is, "any text"),
}


def _solution(text: str, gold: str, extractor: str) -> str:
    """The worked reasoning `algorithm=sft` trains on: GSM8K's text before '####' without its calculator
    annotations; otherwise the whole answer cell, when it holds more than the gold answer."""
    if extractor == "hash":
        return CALCULATOR_RE.sub("", text.split("####")[0]).strip()
    text = text.strip()
    return "" if text == gold else text


def config_problems(cfg: TaskConfig) -> list[tuple[str, object, str, str]]:
    """(field, value, problem, fix) of every missing setting of a `task=hf` config (config.validate)."""
    out = []
    if not (cfg.path or cfg.hub_id):
        out.append(("task.path", None, "task=hf needs local files or a hub dataset",
                    "set task.path=<folder, or a pattern with {split}> or task.hub_id=<org/name>"))
    for field, value, example in (("task.prompt_column", cfg.prompt_column, "question"),
                                  ("task.answer_column", cfg.answer_column, "answer"),
                                  ("task.answer_extractor", cfg.answer_extractor, "hash")):
        if not value:
            out.append((field, value, "task=hf needs it", f"e.g. {field}={example}"))
    return out


def source_split(cfg: TaskConfig, split: str) -> str:
    """The dataset's name for one of the task's splits (train, test)."""
    return cfg.train_split if split == "train" else cfg.test_split


def _split_field(split: str) -> str:
    return "task.train_split" if split == "train" else "task.test_split"


def split_files(cfg: TaskConfig, split: str) -> list[Path]:
    """The local files of a split under `task.path`; InputError when there are none, or several formats."""
    name = source_split(cfg, split)
    if "{split}" in cfg.path:
        pattern = os.path.expanduser(cfg.path.replace("{split}", name))
        files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
        if not files:
            raise InputError(f"task.path={cfg.path!r}: no file matches {pattern!r} for the {split} split; fix the "
                             f"pattern or set {_split_field(split)}=<the name in the file names>")
    else:
        folder = Path(cfg.path).expanduser()
        if folder.is_file():
            raise InputError(f"task.path={cfg.path!r} is one file; give the folder holding {cfg.train_split}.<ext> "
                             f"and {cfg.test_split}.<ext>, or a pattern with {{split}} such as data/{{split}}.jsonl")
        if not folder.is_dir():
            raise InputError(f"task.path={cfg.path!r} is not a folder; point it at the folder holding the split files, "
                             "or give a pattern with {split} such as data/{split}.jsonl")
        files = [f for d in (folder, folder / "data") for ext in FORMATS
                 for f in sorted(d.glob(f"{name}.{ext}")) + sorted(d.glob(f"{name}-*.{ext}"))]
        if not files:
            raise InputError(f"task.path={cfg.path!r} has no {name}.jsonl, {name}.parquet or {name}.csv (nor "
                             f"data/{name}-*.<ext>); add the file or set {_split_field(split)}=<its name>")
    kinds = sorted({f.suffix.lstrip(".") for f in files})
    if kinds[0] not in FORMATS or len(kinds) > 1:
        raise InputError(f"task.path={cfg.path!r}: the {split} split's files are {', '.join(f.name for f in files[:4])}; "
                         f"use one format of {', '.join(FORMATS)}")
    return files


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path} line {number}", json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path} line {number} is not JSON; a .jsonl file holds one JSON object a line") from None


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, object]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        _check_header(path, reader.fieldnames or [], columns)
        for number, row in enumerate(reader, 2):  # line 1 is the header
            yield f"{path} line {number}", row


def _parquet_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq  # a parquet split only

    try:
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: not a parquet file
        raise InputError(f"{path} is not a readable parquet file ({str(exc).splitlines()[0]}); write it again") from None
    _check_header(path, names, columns)
    number = 0
    for batch in table.iter_batches(columns=list(columns)):
        for row in batch.to_pylist():
            number += 1
            yield f"{path} row {number}", row


def _check_header(path: Path, names: list[str], columns: tuple[str, ...]) -> None:
    for field, column in zip(("task.prompt_column", "task.answer_column"), columns):
        if column not in names:
            raise InputError(f"{field}={column!r} is not a column of {path} (its columns: {', '.join(names[:12])}); "
                             f"set {field}=<one of them>")


def local_rows(cfg: TaskConfig, split: str) -> Iterator[tuple[str, object]]:
    """(where, row) of every row of a split's local files, in file order."""
    columns = (cfg.prompt_column, cfg.answer_column)
    for path in split_files(cfg, split):
        kind = path.suffix.lstrip(".")
        yield from (_jsonl_rows(path) if kind == "jsonl" else
                    _csv_rows(path, columns) if kind == "csv" else _parquet_rows(path, columns))


def hub_rows(cfg: TaskConfig, split: str) -> Iterator[tuple[str, object]]:
    """(where, row) of a hub dataset's split (or a dataset folder `datasets` reads), through `datasets`."""
    from datasets import load_dataset  # seconds to import; only a hub task pays for it

    name = source_split(cfg, split)
    where = f"task.hub_id={cfg.hub_id!r} split {name!r}"
    try:
        ds = load_dataset(cfg.hub_id, cfg.hub_config, split=name)
    except Exception as exc:  # noqa: BLE001 - not found, no such split or config, no network: all say the same fix
        reason = " ".join(str(exc).split())[:300]
        raise InputError(f"{where} could not be loaded ({type(exc).__name__}: {reason}); check task.hub_id, "
                         f"task.hub_config and {_split_field(split)}") from None
    for column, field in ((cfg.prompt_column, "task.prompt_column"), (cfg.answer_column, "task.answer_column")):
        if column not in ds.column_names:
            raise InputError(f"{field}={column!r} is not a column of {where} (its columns: "
                             f"{', '.join(ds.column_names[:12])}); set {field}=<one of them>")
    for i, row in enumerate(ds):
        yield f"{where} row {i + 1}", row


def _cell(value, where: str, field: str, column: str) -> str | None:
    """A cell as text: numbers as written (parquet and JSON keep them typed); None for an empty one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{where}: {field}={column!r} holds a {type(value).__name__}, not text or a number; "
                     f"set {field} to a text column")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def example(row, cfg: TaskConfig, where: str) -> Example:
    """One row as an Example; InputError naming `where` and the setting to change when it is not one."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: a row is a JSON {type(row).__name__}, not an object with the task's columns")
    for field, column in (("task.prompt_column", cfg.prompt_column), ("task.answer_column", cfg.answer_column)):
        if column not in row:
            raise InputError(f"{where}: no column {column!r} ({field}); the row's columns are "
                             f"{', '.join(map(str, list(row)[:12]))}; set {field}=<one of them>")
    question = _cell(row[cfg.prompt_column], where, "task.prompt_column", cfg.prompt_column)
    answer = _cell(row[cfg.answer_column], where, "task.answer_column", cfg.answer_column)
    if not question or not question.strip():
        raise InputError(f"{where}: the question (task.prompt_column={cfg.prompt_column!r}) is empty; drop the row")
    if answer is None:
        raise InputError(f"{where}: the answer (task.answer_column={cfg.answer_column!r}) is empty; drop the row")
    extract, wanted = EXTRACTORS[cfg.answer_extractor]
    gold = extract(answer)
    if gold is None:
        raise InputError(f"{where}: task.answer_extractor={cfg.answer_extractor} finds no gold answer ({wanted}) in "
                         f"task.answer_column={cfg.answer_column!r}: {_shown(answer)}; pick the extractor that fits "
                         f"the column ({', '.join(EXTRACTORS)}) or drop the row")
    return Example(_qid(question), question, gold, _solution(answer, gold, cfg.answer_extractor))


def located(cfg: TaskConfig, split: str) -> list[tuple[str, Example]]:
    """(where, example) of every row of a split; InputError for the first bad row or an empty split."""
    rows = local_rows(cfg, split) if cfg.path else hub_rows(cfg, split)
    out = [(where, example(row, cfg, where)) for where, row in rows]
    if not out:
        source = f"task.path={cfg.path!r}" if cfg.path else f"task.hub_id={cfg.hub_id!r}"
        raise InputError(f"{source}: the {split} split ({source_split(cfg, split)!r}) holds no rows; "
                         f"give it rows or set {_split_field(split)}=<a split that has them>")
    return out


def load_hf(cfg: TaskConfig, split: str) -> list[Example]:
    examples = [e for _, e in located(cfg, split)]
    return examples[: cfg.train_size] if split == "train" and cfg.train_size else examples
