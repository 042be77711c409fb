"""The version of the code that computes results, for every cache and skip key.

`code_version()` hashes the source of every module of the package that can change a job's numbers
(everything but the read-only tools listed in READ_ONLY) together with the versions of the libraries
that compute them. A profile cached, or a job finished, by other code is then never reused silently:
its key differs. New modules count by default, so forgetting to list one errs on the side of rerunning.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# modules that only read records or time things: editing them changes no job's result
READ_ONLY = ("analysis", "sweep", "report.py", "status.py", "cli.py", "__main__.py")
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "vllm")


@functools.cache
def code_version() -> str:
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in READ_ONLY or "__pycache__" in rel.parts:
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}=={metadata.version(lib)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}:absent".encode())
    return h.hexdigest()[:16]
