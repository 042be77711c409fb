"""grpo-rank installed as a library: the wheel carries the Hydra configs (conf/ becomes grpo_rank/conf), and
its `grpo-rank` command runs a job from a folder outside any checkout; the command's dispatch.

    python -m pytest -q tests/test_install.py     # ~30 s: builds the wheel, installs it into a fresh venv

Offline: the wheel is built with this environment's setuptools (no build isolation, no index), installed
with --no-deps, and the fresh venv borrows this environment's site-packages for the dependencies through
a .pth line added after the install (so pip never sees the checkout's own editable grpo-rank).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grpo_rank import cli
from grpo_rank.record.files import RUNS, read_jsonl
from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")


def test_pyproject_lists_every_package_and_every_conf_folder():
    """The package list is written out (conf/ is mapped into the package), so a new folder must be added."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # hydra_plugins is a namespace package (no __init__.py: Hydra's own plugins share it)
    code = {"hydra_plugins"} | {".".join(p.parent.relative_to(ROOT).parts) for top in ("grpo_rank", "hydra_plugins")
                                for p in (ROOT / top).rglob("__init__.py")}
    conf = {".".join(("grpo_rank", *p.relative_to(ROOT).parts)) for p in [ROOT / "conf", *(ROOT / "conf").rglob("*")]
            if p.is_dir() and p.name != "__pycache__"}
    assert set(setuptools["packages"]) == code | conf
    assert setuptools["package-dir"] == {"grpo_rank.conf": "conf"}


def test_the_vllm_extra_is_trls_own_pinned_range():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["vllm"] == ["trl[vllm]"]


def test_an_unknown_or_absent_command_is_one_line(monkeypatch, capsys):
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err == "grpo-rank: unknown command 'train'; use one of run, report, status, evaluate\n"
    # a command whose module this installation lacks (as `evaluate` in a copy from before it existed)
    monkeypatch.setitem(cli.COMMANDS, "gone", ("grpo_rank.no_such_command", "main", "a command not installed"))
    assert cli.main(["gone", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this installation has no grpo_rank.no_such_command" in err
    assert cli.main([]) == 2 and "usage: grpo-rank <command>" in capsys.readouterr().err


def test_a_command_gets_the_remaining_arguments(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def _copy_source(dest: Path) -> Path:
    """What a source checkout holds for the build: metadata, the package and the configs."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("grpo_rank", "hydra_plugins", "conf"):
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    return dest


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_installed_wheel_runs_a_job_outside_the_checkout(tmp_path):
    src = _copy_source(tmp_path / "src")
    offline = ["--no-deps", "--no-index", "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check"]
    _run([sys.executable, "-m", "pip", "wheel", *offline, "-w", tmp_path / "dist", src], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("grpo_rank-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("grpo_rank/conf/") for n in names if n.startswith("grpo_rank/conf/")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert any(n.endswith("entry_points.txt") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel], cwd=tmp_path)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    # the dependencies: this environment's site-packages, after the venv's own (which holds the wheel)
    Path(purelib.stdout.strip(), "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"  # no checkout here or above: /tmp/pytest-of-<user>/...
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled")
    where = _run([python, "-c", "import grpo_rank.run as r; print(r.__file__); print(r.config_dir())"], cwd=work, env=env)
    module_file, conf = where.stdout.split()
    assert module_file.startswith(str(venv)) and conf == str(Path(module_file).parent / "conf")

    proc = _run([venv / "bin" / "grpo-rank", "run", "model=tiny", "dry_run=true", "tracking.mode=disabled"],
                cwd=work, env=env)
    assert "trainable LoRA parameters" in proc.stdout
    (runs,) = (work / "multirun" / "single").glob(f"*/*/{RUNS}")
    assert [e["event"] for e in read_jsonl(runs)] == ["started", "dry_run"]
    # a bad key is still the one-line input error, with the configs read from the installed package
    bad = subprocess.run([venv / "bin" / "grpo-rank", "run", "model=tiny", "grpo.stepz=3"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "grpo.stepz" in bad.stderr, bad.stderr
