"""The trained adapter, kept in the job folder in PEFT's format, and loaded back as the model that was evaluated.

    from peft import PeftModel
    model = PeftModel.from_pretrained(base, job_dir / "adapter")   # base: models.load(cfg.model, ...)
    model = adapter.load(base, job_dir, record.adapter)             # the same, the weights' sha256 checked first

`save` writes PEFT's own files (adapter_config.json, adapter_model.safetensors) and the model card
(README.md, `card`) into a temp folder that is renamed into place, so a job killed mid-save leaves the
earlier adapter or none, never half of one. The LoRA plan travels in adapter_config.json: `rank_pattern`
maps every targeted module's escaped path to its allocated rank (allocation/lora.py), so PEFT rebuilds
exactly the per-layer ranks that were trained; `layer_ranks` reads them back per layer. The card says
what the adapter is: the allocation table, the accuracy with its interval, and the settings that made it.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from grpo_rank.allocation.sites import LAYER_PATTERN
from grpo_rank.config.schema import RunConfig, result_payload
from grpo_rank.errors import InputError
from grpo_rank.record.files import ADAPTER, ADAPTER_WEIGHTS, atomic_dir, atomic_write_text, sha256_file
from grpo_rank.record.result import AdapterInfo, JobResult

CARD = "README.md"
CONFIG = "adapter_config.json"


def save(model, job_dir: Path, card_text: str) -> AdapterInfo:
    """The PeftModel's adapter and `card_text` into `<job_dir>/adapter/`, atomically (an earlier one is replaced)."""
    target = Path(job_dir) / ADAPTER

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)  # a PeftModel saves its adapter weights and config, not the base model
        (tmp / CARD).write_text(card_text)  # ours, in place of PEFT's template

    atomic_dir(target, build)
    kind = model.peft_config["default"].peft_type
    return AdapterInfo(path=ADAPTER, sha256=sha256_file(target / ADAPTER_WEIGHTS), weights=ADAPTER_WEIGHTS,
                       kind=str(getattr(kind, "value", kind)))


def write_card(job_dir: Path, card_text: str) -> None:
    atomic_write_text(Path(job_dir) / ADAPTER / CARD, card_text)


def check(job_dir: Path, info: AdapterInfo | None) -> Path:
    """The adapter folder the record names, its weights' sha256 equal to the recorded one; InputError (one
    line) otherwise. Reads files only: called before any model loads."""
    if info is None:
        raise InputError(f"{job_dir}/result.json records no adapter: the job trained nothing, or ran before "
                         "adapters were kept; rerun it with force=true to keep one")
    folder = Path(job_dir) / info.path
    weights = folder / info.weights
    if not (folder / CONFIG).is_file() or not weights.is_file():
        raise InputError(f"{folder}: the adapter's {CONFIG} or {info.weights} is missing; restore the folder "
                         "or rerun the job with force=true")
    if sha256_file(weights) != info.sha256:
        raise InputError(f"{weights}: sha256 differs from the one in result.json, so it is not the adapter "
                         "that was evaluated; restore it or rerun the job with force=true")
    return folder


def load(base_model, job_dir: Path, info: AdapterInfo | None):
    """`base_model` with the job's adapter, for inference (PeftModel.from_pretrained on the checked folder)."""
    from peft import PeftModel

    folder = check(job_dir, info)
    with warnings.catch_warnings():
        if info.kind == "ADALORA":  # check() has raised when the record names no adapter
            # AdaLoRA saves its final ranks as rank_pattern keys on lora_E, which PEFT's generic check at
            # injection reports as matching no module and "ignored"; its AdaLoRA loader then applies them
            # (resize_modules_by_rank_pattern): the replies equal the evaluated ones (tests/test_adalora.py)
            warnings.filterwarnings("ignore", "The following rank_pattern keys did not match", RuntimeWarning)
        return PeftModel.from_pretrained(base_model, folder, is_trainable=False)


def layer_ranks(adapter_config: dict, num_layers: int, layer_pattern: str = LAYER_PATTERN) -> list[int]:
    """Per-layer ranks from a saved adapter_config.json's rank_pattern (lora.layer_keys: a layer's escaped
    path and what lies below it); ValueError when a layer's keys disagree or a layer has none."""
    per_layer: dict[int, set[int]] = {}
    for key, rank in adapter_config.get("rank_pattern", {}).items():
        path = re.sub(r"\\(.)", r"\1", key.removesuffix(r"(?:\..+)?"))  # undo layer_keys' suffix and re.escape
        m = re.search(layer_pattern, path + ".")
        if m:
            per_layer.setdefault(int(m.group(1)), set()).add(int(rank))
    bad = [layer for layer in range(num_layers) if len(per_layer.get(layer, ())) != 1]
    if bad:
        raise ValueError(f"rank_pattern gives no single rank for layers {bad[:5]}")
    return [per_layer[layer].pop() for layer in range(num_layers)]


def read_config(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / ADAPTER / CONFIG).read_text())


def card(cfg: RunConfig, result: JobResult, repo: str | None = None) -> str:
    """The model card: front matter the Hub reads, what was trained, its accuracy, the allocation, the settings."""
    job, ev = result.job, result.eval
    front = ["library_name: peft", "tags: [grpo-rank, lora, " + cfg.algorithm.name + "]"]
    if cfg.model.source == "hub" and cfg.model.path and not Path(cfg.model.path).exists():
        front.append(f"base_model: {cfg.model.path}")  # a hub id; a local folder means nothing on the Hub
    params = f"{result.params.built or result.params.planned:,}" if result.params else "?"
    lines = ["---", *front, "---", "", f"# {job.group}-s{job.seed}", "",
             f"A LoRA adapter of `{cfg.model.name}` ({_base(cfg)}) trained by grpo-rank with `{cfg.algorithm.name}` "
             f"for {cfg.grpo.steps} steps on the `{cfg.task.name}` task, seed {job.seed}. Per-layer ranks: the "
             f"`{job.strategy}` allocation at budget `{job.budget}` ({_budget(result, cfg)}); {params} trainable "
             "parameters.", "", "## Evaluation", ""]
    if ev is None:
        lines.append("Not evaluated: the job stopped before its evaluation.")
    else:
        lines.append(f"Accuracy **{ev.accuracy:.3f}** (95% Wilson interval [{ev.ci_low:.3f}, {ev.ci_high:.3f}]): "
                     f"{ev.correct} of {ev.n} questions of the `{ev.split}` split, greedy decoding, "
                     f"`{ev.generation.get('scoring', cfg.eval.scoring)}` scoring; {ev.parse_failures} replies "
                     "without a parsable answer.")
    lines += ["", "## Allocation", "", *_allocation_table(result), "", "## Loading", "", "```python",
              "from peft import PeftModel", f"model = PeftModel.from_pretrained(base_model, {repo or 'adapter_dir'!r})",
              "```", "", "The base model is loaded as the job's config says (grpo_rank.data.models.load); "
              "`python -m grpo_rank.evaluate <job folder>` does both and evaluates again.", "",
              "## Settings", "", f"config_hash `{job.config_hash}`, code "
              f"`{result.runtime.code_version if result.runtime else '?'}`. The settings that change the result:", "",
              "```yaml", OmegaConf.to_yaml(result_payload(cfg, "job")).rstrip(), "```", ""]
    return "\n".join(lines)


def _budget(result: JobResult, cfg: RunConfig) -> str:
    alloc = result.allocation
    if alloc is None:
        return "no allocation recorded"
    return (f"total rank {alloc.budget_total}: {result.job.budget_fraction:g} of rank {cfg.lora.r} on each of "
            f"{alloc.num_layers} layers")


def _base(cfg: RunConfig) -> str:
    m = cfg.model
    if m.source == "gguf_package":
        return f"{m.gguf_file} from {m.path or m.gguf_package}, de-quantised"
    if m.source == "tiny":
        return f"tiny {m.tiny.arch}, {m.tiny.num_layers} layers, randomly initialised"
    return m.path or m.name


def _allocation_table(result: JobResult) -> list[str]:
    alloc = result.allocation
    if alloc is None or not alloc.ranks:
        return ["No LoRA ranks: this job trained nothing."]
    imp = alloc.importance
    total = sum(imp) if imp else 0.0
    final = result.adaptive.final_layer_ranks if result.adaptive else None
    head = "| layer | rank | importance share |" + (" final rank (adalora) |" if final else "")
    rows = [head, "|---|---|---|" + ("---|" if final else "")]
    for layer, rank in enumerate(alloc.ranks):
        share = f"{imp[layer] / total:.4f}" if imp and total > 0 else "-"
        rows.append(f"| {layer} | {rank} | {share} |" + (f" {final[layer]:g} |" if final else ""))
    rows.append(f"| total | {alloc.total} | |" + (f" {sum(final):g} |" if final else ""))
    return rows
