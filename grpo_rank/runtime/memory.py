"""Memory arithmetic without torch: the bytes a model's weights and the full-weight signal take, and the memory
of the device a job trains on. pipeline/preflight.py turns the signal off where it would not fit (one line
says so); `python -m grpo_rank.runtime.memory` prints the signal's extra memory for the study's models.

The signal (training/fullweight.py) needs, beside what training itself keeps:
- one micro-batch per optimizer step, one process: one projection's dL/dW at a time (the largest targeted
  projection, in the weights' dtype, plus a float32 copy for the norm under a narrower dtype), freed once
  its norm is taken;
- gradient accumulation or several processes: a buffer of every targeted weight, in the weights' dtype
  (float32 under float16): 2 bytes per targeted parameter in bfloat16, 4 in float32.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
USABLE = 0.9  # of a device's memory: what the weights and the signal may take, leaving the rest to activations


@dataclass(frozen=True)
class Dims:
    """A decoder's shape, as transformers' configs name it."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int | None = None
    tie_word_embeddings: bool = False

    @classmethod
    def of(cls, config) -> Dims:
        """From a transformers config object or a config.json dict."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        heads = get("num_attention_heads")
        return cls(get("hidden_size"), get("intermediate_size"), get("num_hidden_layers"), heads,
                   get("num_key_value_heads") or heads, get("vocab_size"), get("head_dim"),
                   bool(get("tie_word_embeddings", False)))

    def projections(self) -> dict[str, int]:
        """Parameters of each projection of one layer."""
        h, i = self.hidden_size, self.intermediate_size
        d = self.head_dim or h // self.num_attention_heads
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        return {"q_proj": q * h, "k_proj": kv * h, "v_proj": kv * h, "o_proj": h * q,
                "gate_proj": i * h, "up_proj": i * h, "down_proj": h * i}

    def targeted(self, target_modules) -> tuple[int, int]:
        """(parameters of every targeted projection summed, of the largest one)."""
        sizes = [self.projections()[m] for m in target_modules]
        return self.num_hidden_layers * sum(sizes), max(sizes)

    def params(self) -> int:
        """Every weight matrix (norms are negligible): the layers' projections and the embeddings."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * sum(self.projections().values()) + embeddings


def signal_bytes(dims: Dims, target_modules, dtype: str, buffered: bool) -> int:
    """The full-weight signal's extra memory at its peak (module docstring)."""
    total, largest = dims.targeted(target_modules)
    if buffered:
        return total * DTYPE_BYTES["float32" if dtype == "float16" else dtype]
    # the product in the weights' dtype, and its float32 copy for the norm when that dtype is narrower
    return largest * (DTYPE_BYTES[dtype] + (4 if dtype != "float32" else 0))


def device_memory(gpus: int) -> int | None:
    """Bytes of the device a job trains on: the first visible GPU's (nvidia-smi), else this machine's
    memory (its cgroup's limit when lower); None when it cannot be read."""
    if gpus > 0:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None
        try:
            out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.split()
            return int(out[0]) * 2**20 if out else None
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    limit = Path("/sys/fs/cgroup/memory.max")
    if limit.is_file() and limit.read_text().strip().isdigit():
        total = min(total, int(limit.read_text()))
    return total


def signal_fits(weights: int, extra: int, memory: int | None) -> bool:
    """Whether the weights and the signal's extra memory fit in USABLE of the device (True when unknown)."""
    return memory is None or weights + extra <= USABLE * memory


# the study's models, from their config.json (hidden, intermediate, layers, heads, kv heads, vocab, tied)
STUDY_MODELS = {
    "Qwen2.5-1.5B": Dims(1536, 8960, 28, 12, 2, 151936, tie_word_embeddings=True),
    "Qwen2.5-7B": Dims(3584, 18944, 28, 28, 4, 152064),
}
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    print("full-weight signal, extra memory with LoRA on all 7 projections (bfloat16 weights):")
    for name, dims in STUDY_MODELS.items():
        total, largest = dims.targeted(ALL_PROJECTIONS)
        one = signal_bytes(dims, ALL_PROJECTIONS, "bfloat16", buffered=False)
        acc = signal_bytes(dims, ALL_PROJECTIONS, "bfloat16", buffered=True)
        print(f"  {name}: {total / 1e9:.3f}B targeted parameters, weights {dims.params() * 2 / 2**30:.1f} GiB; "
              f"one micro-batch a step {one / 2**20:.0f} MiB, gradient accumulation {acc / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
