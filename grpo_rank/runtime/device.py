"""What the machine can do (CUDA, bf16, vLLM), decided once per process, and what follows from it for
a config: the dtype, whether generation uses vLLM, and the runtime facts that enter a profile's key (a
profile from a GPU in bf16 with vLLM generation is another profile than one from a CPU in fp32).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from grpo_rank.errors import InputError


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    bf16: bool  # a GPU with fast bf16; never on CPU (slow there, and TRL's bf16 default fails)
    vllm: bool  # the vllm package is importable

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"


@functools.cache
def capabilities() -> Capabilities:
    import torch

    cuda = torch.cuda.is_available()
    return Capabilities(cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
                        vllm=importlib.util.find_spec("vllm") is not None)


def dtype_name(setting: str, caps: Capabilities | None = None) -> str:
    """`model.dtype` resolved: auto is bfloat16 on a GPU that has it, else float32."""
    caps = caps or capabilities()
    if setting == "auto":
        return "bfloat16" if caps.bf16 else "float32"
    return setting


def torch_dtype(setting: str):
    import torch

    return getattr(torch, dtype_name(setting))


def use_vllm(setting: bool | None, caps: Capabilities | None = None) -> bool:
    """`grpo.use_vllm`: None (auto) uses vLLM when a GPU and vllm are both there."""
    caps = caps or capabilities()
    if setting is None:
        return caps.cuda and caps.vllm
    if setting and not caps.cuda:
        raise InputError("grpo.use_vllm=true needs a GPU; set grpo.use_vllm=null (auto) or false on CPU")
    if setting and not caps.vllm:
        raise InputError("grpo.use_vllm=true but vllm is not installed; pip install -e '.[vllm]' or set "
                         "grpo.use_vllm=null")
    return bool(setting)


def runtime(dtype_setting: str, vllm_setting: bool | None) -> dict:
    """The machine facts that change a training phase's gradients (not just their rounding)."""
    caps = capabilities()
    return {"device": caps.device, "dtype": f"torch.{dtype_name(dtype_setting, caps)}",
            "vllm": use_vllm(vllm_setting, caps)}


def visible_gpus(env: dict | None = None, driver: Path = Path("/proc/driver/nvidia/gpus")) -> int:
    """NVIDIA GPUs this process may use, without importing torch: the driver's list, narrowed by
    CUDA_VISIBLE_DEVICES when it is set."""
    env = os.environ if env is None else env
    present = len(list(driver.iterdir())) if driver.is_dir() else 0
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    named = [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return min(present, len(named))


def local_jobs(cores: int, gpus: int) -> int:
    """How many jobs of a sweep run side by side on this machine (conf/hydra/launcher/local.yaml): one with a
    GPU (two would share its memory) or on one core, else two, each on half the cores."""
    return 1 if gpus > 0 or cores < 2 else 2


GPU_ATTENTION = ("flash_attention_2", "flash_attention_3")


def check_gpu_settings(quantization: str | None, attn_implementation: str | None,
                       caps: Capabilities | None = None) -> None:
    """Model settings that need a GPU (checked before a training run loads weights; a dry run plans them anywhere)."""
    caps = caps or capabilities()
    if quantization and not caps.cuda:
        raise InputError(f"model.quantization={quantization} (QLoRA, bitsandbytes) needs a GPU; set "
                         "model.quantization=null on CPU, or dry_run=true to plan it")
    if attn_implementation in GPU_ATTENTION and not caps.cuda:
        raise InputError(f"model.attn_implementation={attn_implementation} needs a GPU; use sdpa or eager on CPU")
