"""The model part of the configuration (`model.*`, conf/model/): which weights, from where, how they load.

    python -m grpo_rank.run model=hf model.path=Qwen/Qwen3-0.6B model.revision=main model.dtype=bfloat16
    python -m grpo_rank.run model=hf model.path=/models/phi-3-mini lora.target_modules=[all-linear] \\
        model.quantization=4bit model.attn_implementation=sdpa

Every field is declared with `setting` (fields.py) like the rest of RunConfig (schema.py); `check_model` is
validate's part for the rules between model fields. The fields added after results were recorded name the
value that reproduces those results (`omit_at`), so earlier runs keep their identity and cache keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, OmegaConf

from grpo_rank.config.fields import NonEmpty, OneOf, at_least, fail, setting
from grpo_rank.data.models import LOADERS, TINY_ARCHS

DTYPES = {"auto": "bf16 on a GPU that supports it, else fp32", "float32": "fp32", "bfloat16": "bf16",
          "float16": "fp16"}
# model.quantization: QLoRA's frozen base in bitsandbytes' 4-bit NF4 or 8-bit, LoRA on top (a GPU only)
QUANTIZATIONS = {"4bit": "NF4 with double quantization, computed in model.dtype", "8bit": "LLM.int8()"}
# model.attn_implementation: transformers' attention kernels (null: transformers' own choice, sdpa where it can)
ATTN_IMPLEMENTATIONS = {"eager": "plain PyTorch", "sdpa": "torch scaled_dot_product_attention",
                        "flash_attention_2": "flash-attn 2 (GPU)", "flash_attention_3": "flash-attn 3 (GPU)",
                        "flex_attention": "torch flex attention"}
NAME = NonEmpty()
COUNT = at_least(1)


def name_from_path(path: str | None) -> str:
    """conf/model/hf.yaml's default model.name: the hub id's or folder's last part (Qwen/Qwen3-0.6B: Qwen3-0.6B)."""
    parts = [p for p in str(path or "").replace("\\", "/").split("/") if p]
    return parts[-1] if parts else "hf"


OmegaConf.register_new_resolver("grpo_rank_model_name", name_from_path, replace=True)


@dataclass
class TinyModelConfig:
    # 12+ layers so that layer 1 and layers 10-19 coexist: the PEFT regex-key collision needs both.
    # models.TINY_ARCHS: llama, qwen2, qwen3, gemma2, gemma3, phi3, gpt2, qwen3_moe, mixtral
    arch: str = setting("llama", valid=OneOf(TINY_ARCHS, "architecture"))
    num_layers: int = setting(12, valid=COUNT)
    hidden_size: int = setting(64, valid=COUNT)
    intermediate_size: int = setting(128, valid=COUNT)
    num_heads: int = setting(4, valid=COUNT)
    num_kv_heads: int = setting(2, valid=COUNT)
    # size of the BPE tokenizer trained in-process; the 256 bytes and 3 special tokens come first
    vocab_size: int = setting(512, valid=at_least(259))


@dataclass
class ModelConfig:
    name: str = setting(MISSING, valid=NAME)
    source: str = setting(MISSING, valid=OneOf(lambda: list(LOADERS), "model source"))
    # hub id or local folder (source=hub); folder override for the GGUF (source=gguf_package)
    path: str | None = setting(None)
    gguf_package: str | None = setting(None)  # a pip package whose folder holds gguf_file
    gguf_file: str | None = setting(None)
    dtype: str = setting("auto", valid=OneOf(DTYPES, "dtype"))
    # source=hub: a branch, tag or commit of the hub repository (null: its default branch)
    revision: str | None = setting(None, omit_at=None)
    # source=hub: run the modelling code the repository ships (only for a repository you trust)
    trust_remote_code: bool = setting(False, omit_at=False)
    attn_implementation: str | None = setting(None, valid=OneOf(ATTN_IMPLEMENTATIONS, "attention", optional=True),
                                              omit_at=None)
    # QLoRA: load the frozen base quantized by bitsandbytes (GPU only; a dry run plans it anywhere)
    quantization: str | None = setting(None, valid=OneOf(QUANTIZATIONS, "quantization", optional=True),
                                       omit_at=None)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)



def check_model(m: ModelConfig) -> None:
    if m.source == "hub" and not m.path:
        fail("model.path", m.path, "a hub model needs a hub id or local folder", "set model.path=<id or dir>")
    if m.source == "gguf_package" and not m.gguf_file:
        fail("model.gguf_file", m.gguf_file, "a GGUF model needs its file name", "set model.gguf_file=<name>.gguf")
    if m.source == "gguf_package" and not (m.gguf_package or m.path):
        fail("model.gguf_package", m.gguf_package, "a GGUF model needs the package or folder that holds it",
             "set model.gguf_package=<pip package> or model.path=<folder>")
    for name, value in (("model.revision", m.revision), ("model.trust_remote_code", m.trust_remote_code)):
        if value and m.source != "hub":
            fail(name, value, f"applies to hub models only, not model.source={m.source}", f"drop {name}")
    if m.quantization and m.source == "tiny":
        fail("model.quantization", m.quantization, "quantizes pretrained weights; the tiny model is built "
             "in-process", "set model.quantization=null")
    if m.source == "tiny":
        tiny = m.tiny
        if tiny.hidden_size % tiny.num_heads:
            fail("model.tiny.num_heads", tiny.num_heads, f"must divide model.tiny.hidden_size={tiny.hidden_size}",
                 "e.g. model.tiny.num_heads=4")
        if tiny.num_heads % tiny.num_kv_heads:
            fail("model.tiny.num_kv_heads", tiny.num_kv_heads, f"must divide model.tiny.num_heads={tiny.num_heads}",
                 "e.g. model.tiny.num_kv_heads=2")
