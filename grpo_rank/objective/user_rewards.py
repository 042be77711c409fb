"""Reward functions of the user's own modules, named in `grpo.reward_modules`, beside the built-in ones:

    python -m grpo_rank.run 'grpo.reward_modules=[mypkg.rewards]' +grpo.rewards.my_reward=1.0

A module is imported by name (importlib; it must be on PYTHONPATH or installed, never a path or code
to evaluate), and every name in `grpo.rewards` that is not a built-in reward (rewards.REWARDS) is
looked up as a function of those modules. Such a function has TRL's reward signature,
`my_reward(completions, **kwargs) -> list[float]`: TRL calls it with keywords only (prompts,
completions, completion_ids, trainer_state, log_extra, log_metric and the dataset's columns, here
`answer` and `id`), so it must take `completions` and `**kwargs` and require nothing TRL does not pass.
`registry` checks all that at start-up (config.validate), each problem one InputError line.

Which code computed a result: `module_versions` is the sha256 of each module's source, which the run
identity and the profile key include, so editing a reward reruns the jobs that used it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from grpo_rank.errors import InputError
from grpo_rank.objective.rewards import REWARDS

# what TRL 1.16's GRPOTrainer/RLOOTrainer pass a reward function (tasks.prompt_dataset gives answer and id)
PASSED = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "answer", "id")


def import_module(name: str) -> ModuleType:
    """One entry of `grpo.reward_modules`, imported; InputError in one line when it cannot be."""
    field = f"grpo.reward_modules entry {name!r}"
    if name.endswith(".py") or not all(part.isidentifier() for part in name.split(".")):
        raise InputError(f"{field} is not a module name; give a dotted module name such as mypkg.rewards (its "
                         "folder on PYTHONPATH), not a file path")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise InputError(f"{field} cannot be imported (no module named {exc.name!r}); put the folder holding it "
                             "on PYTHONPATH or pip install its package") from None
        raise InputError(f"{field}: importing it failed (ModuleNotFoundError: {exc}); install what it imports") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed at import: say so in one line
        raise InputError(f"{field}: importing it raised {type(exc).__name__}: {exc}; fix the module") from None


def signature_problem(fn: Callable) -> str | None:
    """What keeps TRL from calling `fn` as a reward function, or None."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return "has no inspectable signature"
    names = {p.name for p in params}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return "takes no **kwargs (TRL passes every dataset column as a keyword)"
    if "completions" not in names:
        return "takes no 'completions' argument"
    for p in params:
        if p.kind is p.POSITIONAL_ONLY:
            return f"takes {p.name!r} positionally only (TRL passes keywords)"
        required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        if required and p.name not in PASSED:
            return f"requires {p.name!r}, which TRL does not pass (it passes {', '.join(PASSED)})"
    return None


def _reward_like(fn) -> bool:
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "completions" in names


def _module_rewards(module: ModuleType) -> dict[str, Callable]:
    """The module's public functions that take `completions`: what it offers as rewards."""
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and inspect.isfunction(obj) and _reward_like(obj)}


def registry(rewards: Mapping[str, float], modules: Sequence[str], per_reward: bool = False) -> dict[str, Callable]:
    """The reward functions `grpo.rewards` names, by name: built-in ones and those of `modules`.
    InputError (one line) for a module that does not import, a name found nowhere or in two places,
    or a function TRL cannot call (or, with `per_reward`, an async one: reward_split records outputs)."""
    if len(set(modules)) != len(modules):
        raise InputError(f"grpo.reward_modules={list(modules)} names a module twice; list each once")
    loaded = {name: import_module(name) for name in modules}
    offered = {m: _module_rewards(mod) for m, mod in loaded.items()}
    out: dict[str, Callable] = {}
    for name, weight in rewards.items():
        field = f"grpo.rewards.{name}={weight!r}"
        owners = [m for m, mod in loaded.items() if callable(getattr(mod, name, None)) and not name.startswith("_")]
        if name in REWARDS and owners:
            raise InputError(f"{field}: both the built-in reward and {owners[0]}.{name} have this name; rename "
                             f"the function in {owners[0]}")
        if name in REWARDS:
            out[name] = REWARDS[name]
            continue
        if not owners:
            available = [*REWARDS, *(f for funcs in offered.values() for f in funcs)]
            own = "" if modules else " (a function of your own: name its module in grpo.reward_modules)"
            raise InputError(f"{field}: unknown reward; use names from {', '.join(available)}{own}")
        if len(owners) > 1:
            raise InputError(f"{field}: defined in {' and '.join(owners)}; keep one, or rename one of them")
        fn = getattr(loaded[owners[0]], name)
        if inspect.isclass(fn):
            raise InputError(f"{field}: {owners[0]}.{name} is a class; give a function "
                             f"{name}(completions, **kwargs) -> list[float]")
        problem = signature_problem(fn)
        if problem:
            raise InputError(f"{field}: {owners[0]}.{name} {problem}; define it as "
                             f"{name}(completions, **kwargs) -> list[float]")
        if per_reward and inspect.iscoroutinefunction(fn):
            raise InputError(f"{field}: profile.per_reward records each reward's output as it returns, which the "
                             f"async {owners[0]}.{name} does not; make it a plain function, or profile.per_reward=false")
        out[name] = fn
    return out


def module_versions(modules: Sequence[str]) -> dict[str, str]:
    """Each module's name -> sha256 of its source file (the first 16 hex digits); "" without a file."""
    out = {}
    for name in modules:
        path = getattr(import_module(name), "__file__", None)
        out[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    return out
