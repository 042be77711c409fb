"""The project's one error type for bad input, and the one line a user sees for any input error.

Every input error the project can recognise (a config value, a data file, a model path, an earlier
run's folder, an infeasible budget) is raised as an `InputError` whose message is one line naming the
field or file and the fix. `error_line` turns it, or a Hydra composition error (a misspelt key, a
wrong type, an unknown group option), into that line; `run_cli` runs a `@hydra.main` function so
that the command prints that line and exits with `EXIT_INPUT` (HYDRA_FULL_ERROR=1 shows the
traceback instead):

    if __name__ == "__main__":
        run_cli(main)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

EXIT_INPUT = 2  # the exit status of a run stopped by bad input (1 stays Python's and Hydra's "crashed")


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


class InputError(ValueError):
    """Bad input the project recognises; str() is one line naming the field or file and the fix."""

    kind = "input error"

    def __init__(self, message: str):
        super().__init__(_one_line(message))


# Hydra's and OmegaConf's messages carry these lines for debugging; they say nothing to a user. Hydra's
# "To append to your config use +key=..." does not apply either: the schema is closed to new keys.
_NOISE = ("full_key:", "object_type=", "reference_type=", "Config search path", "provider=",
          "Set the environment variable HYDRA_FULL_ERROR", "To append to your config")
_SPELLING = "check the spelling: python -m grpo_rank.run --cfg job prints every key"


def _compose_line(exc: BaseException) -> str:
    parts: list[str] = []
    full_key = None
    seen: BaseException | None = exc
    while seen is not None:  # Hydra puts OmegaConf's reason (which names the key) in the cause
        parts += [ln.strip() for ln in str(seen).splitlines()
                  if ln.strip() and not ln.strip().startswith(_NOISE) and ln.strip() not in parts]
        full_key = full_key or getattr(seen, "full_key", None)
        if isinstance(seen, (ConfigAttributeError, ConfigKeyError)):
            parts.append(_SPELLING)
        seen = seen.__cause__
    text = "; ".join(parts).replace(":; ", ": ")  # "options in 'strategy':" + one line per option
    return f"{full_key}: {text}" if full_key and full_key not in text else text


def input_error(exc: BaseException) -> InputError | None:
    """The InputError behind `exc`, also when a library re-raised it as the cause of its own (`raise ...
    from`; not an error merely raised while handling one, which is a crash of its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__
    return None


def is_compose_error(exc: BaseException) -> bool:
    return isinstance(exc, (HydraException, OmegaConfBaseException))


def one_line(exc: BaseException) -> str:
    """Any error in one line: an input error as `<kind>: <message>`, a crash named by its root cause
    (library wrappers put the reason in the cause)."""
    found = input_error(exc)
    if found is not None:
        return f"{found.kind}: {found}"
    if is_compose_error(exc):
        return f"config error: {_compose_line(exc)}"
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    line = _one_line(f"{type(root).__name__}: {root}")
    return line if root is exc else f"{line} (raised as {type(exc).__name__})"


def error_line(exc: BaseException) -> str | None:
    """`grpo-rank: <kind>: <one line>` for an input error (ours, or Hydra's composition errors), else None
    (a crash, whose traceback the user should see)."""
    if input_error(exc) is None and not is_compose_error(exc):
        return None
    return f"grpo-rank: {one_line(exc)}"


_USER_FULL_ERROR = "GRPO_RANK_HYDRA_FULL_ERROR"  # the user's own setting, kept for child processes


def traceback_requested() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1), also in a process run_cli started
    (which sets HYDRA_FULL_ERROR itself)."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def run_cli(main: Callable[[], None]) -> None:
    """Runs a `@hydra.main` function; bad input (a composition error, an InputError) ends in one line on
    stderr and exit status 2 instead of Hydra's multi-line report and status 1."""
    os.environ.setdefault(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, instead of printing its report and exiting 1
    try:
        main()
    except Exception as exc:
        line = error_line(exc)
        if line is None or traceback_requested():
            raise
        print(line, file=sys.stderr)
        sys.exit(EXIT_INPUT)
