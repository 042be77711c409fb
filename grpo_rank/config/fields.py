"""How a config field is declared (config.py uses it for every leaf field of RunConfig):

    steps: int = setting(4, JOB_ONLY, valid=at_least(1))

- `affects`, the one declaration of which results a field changes: `JOB_AND_PROFILE` (the job's
  result and the uniform-rank profile it may use), `JOB_ONLY`, or `NO_RESULT` (where results are kept,
  how they are shown). `payload(cfg, scope)` keeps exactly the fields that change scope "job" or
  "profile"; the run identity and the profile cache key are hashes of it, so a new field cannot
  silently change skip, resume or profile sharing: tests/test_config.py fails when one lacks `affects`.
- `valid`, the field's own rule: a `Range` (every numeric field has one), `OneOf` a registry's keys or
  an Enum's values, or `NonEmpty`. `broken_fields` checks them all; rules between fields are config.validate's.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from grpo_rank.errors import InputError


class ConfigError(InputError):
    """A bad setting, reported in one line that names the field and the fix."""

    kind = "config error"


def fail(field_name: str, value, problem: str, fix: str) -> None:
    raise ConfigError(f"{field_name}={value!r}: {problem}; {fix}")


JOB_AND_PROFILE = frozenset({"job", "profile"})  # the job's result and a uniform-rank profile's gradients
JOB_ONLY = frozenset({"job"})  # the job's result, not the profile (the profile key adds its steps itself)
NO_RESULT = frozenset()  # where results are kept or shown, how often to checkpoint
SCOPES = ("job", "profile")


_ALWAYS = object()  # setting(omit_at=...)'s default: the field is in the payload at every value


def setting(default=MISSING, affects: frozenset = JOB_AND_PROFILE, *, valid=None, factory=None, omit_at=_ALWAYS):
    """A leaf field with its decision about results (`affects`) and its rule (`valid`). A field added after
    results were recorded can name the value that reproduces them (`omit_at`): at that value it is left
    out of the payload, so those results keep their identity and cache keys."""
    metadata = {"affects": affects, "valid": valid, "omit_at": omit_at}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi, either end open or absent; None passes (it means "all" or "auto")."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"

    def problem(self, value) -> str | None:
        if value is None:
            return None
        if not math.isfinite(value):
            return "must be a finite number"
        below = self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo))
        above = self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi))
        return f"must be {self}" if below or above else None

    def fix(self, name: str, default) -> str:
        return f"e.g. {name}={default}" if default is not None else f"set {name} {self} (or null)"


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def above(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


@dataclass(frozen=True)
class OneOf:
    """The value names an entry of a registry (its keys are read when checked, so new entries count)."""

    registry: Mapping | Callable[[], Iterable[str]] | type[Enum]
    what: str  # "strategy", "task", ...
    optional: bool = False  # None passes: the field is unset (a rule between fields may still require it)

    def names(self) -> list[str]:
        reg = self.registry
        if isinstance(reg, type) and issubclass(reg, Enum):
            return [m.value for m in reg]
        return list(reg() if callable(reg) else reg)

    def problem(self, value) -> str | None:
        if value is None and self.optional:
            return None
        return None if value in self.names() else f"unknown {self.what}"

    def fix(self, name: str, default) -> str:
        return f"use one of {', '.join(self.names())}{' (or null)' if self.optional else ''}"


class NonEmpty:
    def problem(self, value) -> str | None:
        return "must not be empty" if value is None or not str(value).strip() else None

    def fix(self, name: str, default) -> str:
        return f"e.g. {name}={default}" if default is not None else f"give {name} a value"


def leaf_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, object]]:
    """(dotted name, field, type) of every leaf field of a config dataclass, recursively."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


def broken_fields(cfg) -> Iterator[tuple[str, object, str, str]]:
    """(dotted name, value, what is wrong, the fix) of every field that breaks its own rule, in order."""
    for name, f, _ in leaf_fields(type(cfg)):
        rule = f.metadata.get("valid")
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        problem = rule.problem(value) if rule is not None else None
        if problem:
            default = f.default if f.default not in (MISSING, dataclasses.MISSING) else None
            yield name, value, problem, rule.fix(name, default)


def payload(cfg, scope: str) -> dict:
    """The fields of `cfg` that change results of `scope`, nested like it; empty parts left out."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            part = payload(value, scope)
            if part:
                out[f.name] = part
        elif scope in f.metadata["affects"] and not (f.metadata["omit_at"] is not _ALWAYS
                                                     and value == f.metadata["omit_at"]):
            out[f.name] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
