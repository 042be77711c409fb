"""The catalogue of bad inputs: config overrides, damaged data files, model paths, earlier-run
folders and budgets. Each is rejected as bad input in one line naming the field or file, before any
model loads; the command exits 2 with no traceback, and in a sweep the job is recorded failed while the
others go on. Hostile completions are catalogued in tests/test_rewards.py.

Most cases run in-process through `run.prepare` (what the command's main calls: to_typed, validate,
preflight), with the model loaders replaced by tripwires; a handful run the real command.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.config.schema import TaskConfig
from grpo_rank.data.tasks import load_split
from grpo_rank.errors import InputError
from grpo_rank.record.files import GRADS, RESULT, RUNS, read_jsonl, write_grad_records
from grpo_rank.record.result import JobIdentity, JobResult, write_result
from grpo_rank.run import prepare
from tests.conftest import ROOT, TINY, compose, refused, run_cli

GOOD_ROW = {"question": "Ava has 3 pens and buys 4 more. How many pens?", "answer": "3 + 4 = 7\n#### 7"}
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def gsm8k_dir(train: str = jsonl(GOOD_ROW), test: str | None = jsonl(GOOD_ROW)) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        data = tmp / "data"
        data.mkdir()
        if train is not None:
            (data / "train.jsonl").write_text(train)
        if test is not None:
            (data / "test.jsonl").write_text(test)
    return build


def grad_records(phase: str, layers: int = 12, steps: int = 2) -> dict[str, np.ndarray]:
    rows = [(phase, s, layer, m, mat, 0.1 + layer, 8, 2.0) for s in range(1, steps + 1) for layer in range(layers)
            for m in PROJ for mat in ("A", "B")]
    cols = list(zip(*rows))
    names = ("phase", "step", "layer", "module", "matrix", "norm", "rank", "scaling")
    return {n: np.array(c) for n, c in zip(names, cols)}


def job_record(strategy: str) -> JobResult:
    ident = JobIdentity(strategy=strategy, budget="full", budget_fraction=1.0, seed=0, model="tiny",
                        task="arithmetic", config_hash="0" * 64, group="g", name=f"{strategy}-full-s0", run_id="r")
    return JobResult(status="ok", job=ident, config={})


def earlier_run(strategy: str = "uniform", phase: str | None = "train", layers: int = 12,
                result: str | None = None, grads: bytes | None = None) -> Callable[[Path], None]:
    """A job folder as a finished job leaves it, or damaged: `result` replaces result.json's text,
    `grads` the parquet's bytes; phase=None leaves the gradient records out."""
    def build(tmp: Path) -> None:
        run = tmp / "run"
        run.mkdir()
        write_result(run, job_record(strategy))
        if result is not None:
            (run / RESULT).write_text(result)
        if phase is not None:
            write_grad_records(run / GRADS, grad_records(phase, layers))
        if grads is not None:
            (run / GRADS).write_bytes(grads)
    return build


@dataclass
class Case:
    overrides: tuple[str, ...]  # "{tmp}" is the case's own folder
    expect: str  # must be in the one line: the field or file, and what is wrong
    files: Callable[[Path], None] | None = None


GSM8K = ("model=tiny", "task=gsm8k", "task.path={tmp}/data")
FROM_RUN = ("model=tiny", "strategy=proportional", "profile.from_run={tmp}/run")
HUB = ("model=qwen2_5_1_5b_instruct",)

CASES: dict[str, Case] = {
    # composition: a key no schema has, a value of the wrong type, an option no group has
    "misspelt key": Case(("lora.rank=8",), "lora.rank"),
    "misspelt nested key": Case(("model.tiny.layers=3",), "model.tiny.layers"),
    "misspelt top key": Case(("seedd=1",), "seedd"),
    "seed not an int": Case(("seed=abc",), "seed=abc"),
    "steps not an int": Case(("grpo.steps=many",), "grpo.steps=many"),
    "fraction not a number": Case(("budget.fraction=lots",), "budget.fraction=lots"),
    "dry_run not a bool": Case(("dry_run=maybe",), "dry_run=maybe"),
    "use_vllm auto (now null)": Case(("grpo.use_vllm=auto",), "grpo.use_vllm=auto"),
    "rewards as a list": Case(("grpo.rewards=[1,2]",), "grpo.rewards"),
    "reward weight not a number": Case(("grpo.rewards.format_partial=high",), "grpo.rewards.format_partial"),
    "eval.n not an int": Case(("eval.n=all",), "eval.n=all"),
    "unknown strategy option": Case(("strategy=greedy",), "strategy/greedy"),
    "unknown model option": Case(("model=gpt5",), "model/gpt5"),
    "unknown experiment": Case(("experiment=papr",), "experiment/papr"),
    "sweep list without -m": Case(("grpo.steps=1,2",), "grpo.steps=1,2"),
    "missing mandatory value": Case(("model.name=???",), "model.name"),
    # closed choices, from the registries
    "unknown strategy name": Case(("strategy.name=greedy",), "strategy.name='greedy': unknown strategy"),
    "unknown task name": Case(("task.name=mmlu",), "task.name='mmlu': unknown task"),
    "unknown model source": Case(("model.source=s3",), "model.source='s3': unknown model source"),
    "unknown tracking mode": Case(("tracking.mode=cloud",), "tracking.mode='cloud'"),
    "unknown alpha mode": Case(("lora.alpha_mode=sqrt",), "lora.alpha_mode='sqrt'"),
    "the old use_rslora": Case(("lora.use_rslora=true",), "lora.use_rslora"),
    "unknown importance signal": Case(("profile.signal=fisher",), "profile.signal='fisher': unknown importance signal"),
    "full-weight signal, not recorded": Case(("profile.signal=full_weight", "profile.full_weight=false"),
                                             "profile.full_weight=False: profile.signal=full_weight allocates"),
    "unknown eval scoring": Case(("eval.scoring=strict",), "eval.scoring='strict': unknown scoring"),
    "unknown tiny arch": Case(("model=tiny", "model.tiny.arch=t5"), "model.tiny.arch='t5'"),
    "unknown dtype": Case(("model.dtype=int8",), "model.dtype='int8'"),
    "unknown vllm mode": Case(("grpo.vllm_mode=remote",), "grpo.vllm_mode='remote'"),
    "eval split misspelt": Case(("eval.split=tset",), "eval.split='tset'"),
    "gsm8k has no validation split": Case(("task=gsm8k", "eval.split=validation"), "eval.split='validation'"),
    "unknown reward": Case(("+grpo.rewards.typo=1.0",), "grpo.rewards.typo=1.0: unknown reward"),
    "no reward at all": Case(("~rewards",), "grpo.rewards={}: no reward chosen"),
    "negative reward weight": Case(("grpo.rewards.format_partial=-1",), "grpo.rewards.format_partial=-1.0"),
    "nan reward weight": Case(("grpo.rewards.format_partial=nan",), "grpo.rewards.format_partial=nan"),
    # ranges, each naming its own field
    "negative learning rate": Case(("grpo.learning_rate=-1",), "grpo.learning_rate=-1.0: must be > 0"),
    "zero learning rate": Case(("grpo.learning_rate=0",), "grpo.learning_rate=0.0: must be > 0"),
    "grad_accum 0": Case(("grpo.grad_accum=0",), "grpo.grad_accum=0: must be >= 1"),
    "dropout 1.5": Case(("lora.dropout=1.5",), "lora.dropout=1.5: must be in [0, 1)"),
    "dropout negative": Case(("lora.dropout=-0.1",), "lora.dropout=-0.1"),
    "max_new_tokens 0": Case(("eval.max_new_tokens=0",), "eval.max_new_tokens=0: must be >= 1"),
    "eval batch 0": Case(("eval.batch_size=0",), "eval.batch_size=0"),
    "eval.n 0": Case(("eval.n=0",), "eval.n=0"),
    "temperature 0": Case(("grpo.temperature=0",), "grpo.temperature=0.0: must be > 0"),
    "beta negative": Case(("grpo.beta=-0.1",), "grpo.beta=-0.1: must be >= 0"),
    "max_grad_norm negative": Case(("grpo.max_grad_norm=-1",), "grpo.max_grad_norm=-1.0"),
    "fraction 0": Case(("budget.fraction=0",), "budget.fraction=0.0: must be > 0"),
    "fraction negative": Case(("budget.fraction=-0.5",), "budget.fraction=-0.5"),
    "fraction inf": Case(("budget.fraction=inf",), "budget.fraction=inf: must be a finite number"),
    "steps 0": Case(("grpo.steps=0",), "grpo.steps=0"),
    "one generation": Case(("grpo.num_generations=1",), "grpo.num_generations=1: must be >= 2"),
    "batch 0": Case(("grpo.per_device_batch_size=0",), "grpo.per_device_batch_size=0"),
    "completion length 0": Case(("grpo.max_completion_length=0",), "grpo.max_completion_length=0"),
    "logging_steps 0": Case(("grpo.logging_steps=0",), "grpo.logging_steps=0"),
    "save_steps negative": Case(("grpo.save_steps=-1",), "grpo.save_steps=-1"),
    "rank 0": Case(("lora.r=0",), "lora.r=0: must be >= 1"),
    "alpha 0": Case(("lora.alpha=0",), "lora.alpha=0.0: must be > 0"),
    "multiple 0": Case(("lora.multiple=0",), "lora.multiple=0: must be >= 1"),
    "r_min 0": Case(("lora.r_min=0",), "lora.r_min=0"),
    "seed negative": Case(("seed=-1",), "seed=-1"),
    "profile steps negative": Case(("profile.steps=-1",), "profile.steps=-1"),
    "train_size 0": Case(("task.train_size=0",), "task.train_size=0"),
    "max_operand 1": Case(("task.max_operand=1",), "task.max_operand=1"),
    "threads 0": Case(("threads=0",), "threads=0"),
    "tiny layers 0": Case(("model=tiny", "model.tiny.num_layers=0"), "model.tiny.num_layers=0"),
    "tiny vocab below the byte alphabet": Case(("model=tiny", "model.tiny.vocab_size=10"), "model.tiny.vocab_size=10"),
    # rules between fields
    "r_max below r_min": Case(("lora.r_max=2",), "lora.r_max=2: must be >= lora.r_min=4"),
    "r_min not a multiple": Case(("lora.r_min=6",), "lora.r_min=6: must be a multiple of lora.multiple=4"),
    "batch not divisible": Case(("grpo.num_generations=3",), "grpo.per_device_batch_size=8"),
    "heads do not divide hidden": Case(("model=tiny", "model.tiny.num_heads=3"), "model.tiny.num_heads=3"),
    "kv heads do not divide heads": Case(("model=tiny", "model.tiny.num_kv_heads=3"), "model.tiny.num_kv_heads=3"),
    "target not a module name": Case(("lora.target_modules=[q-proj]",), "lora.target_modules=['q-proj']"),
    "all-linear with a name": Case(("lora.target_modules=[all-linear,q_proj]",), "use [all-linear] alone"),
    "layer pattern not a regex": Case((r"lora.layer_pattern='layers\.(\d+'",), "lora.layer_pattern='layers"),
    "layer pattern without a group": Case((r"lora.layer_pattern='layers\.\d+\.'",), "has no group"),
    "unknown attention kernel": Case(("model.attn_implementation=fast",), "model.attn_implementation='fast'"),
    "unknown quantization": Case(("model.quantization=2bit",), "model.quantization='2bit': unknown quantization"),
    "quantized tiny model": Case(("model=tiny", "model.quantization=4bit"), "the tiny model is built in-process"),
    "revision of a GGUF": Case(("model.revision=main",), "model.revision='main': applies to hub models only"),
    "hf model without a path": Case(("model=hf",), "model.path=None: a hub model needs a hub id"),
    "no projection": Case(("lora.target_modules=[]",), "lora.target_modules=[]: is empty"),
    "projection twice": Case(("lora.target_modules=[q_proj,q_proj]",), "names a projection twice"),
    "proportional dry run without a profile": Case(("strategy=proportional", "dry_run=true"), "profile.from_run"),
    # PEFT's AdaLoRA masks its start down to the budget: a start at the budget crashes mid-training (k = 0)
    "adalora starting at its budget": Case(("model=tiny", "strategy=adalora", "adalora.init_r=8"),
                                           "adalora.init_r=8: AdaLoRA masks ranks away from its start, which must "
                                           "exceed the budget it ends on (lora.r=8 x budget.fraction=1 per module)"),
    "adalora starting at its rounded budget": Case(
        ("model=tiny", "strategy=adalora", "adalora.init_r=8", "budget.fraction=0.99"),
        "adalora.init_r=8: the starting rank 8 on 12 layers (96) must exceed the budget's total rank of 96"),
    "per-reward split with vLLM and dropout": Case(("profile.per_reward=true", "lora.dropout=0.05", "grpo.use_vllm=true"),
                                                   "profile.per_reward=True: with vLLM generation and lora.dropout=0.05"),
    "proportional with 0 profile steps": Case(("strategy=proportional", "profile.steps=0"), "profile.steps=0"),
    "gsm8k without a source": Case(("task=gsm8k", "task.hub_id=null"), "task.path=None"),
    "hub model without a path": Case((*HUB, "model.path=null"), "model.path=None"),
    "gguf without a file name": Case(("model.gguf_file=null",), "model.gguf_file=None"),
    "empty model name": Case(("model.name=''",), "model.name='': must not be empty"),
    # data files (task.path), read through before a model loads
    "data folder missing": Case(("model=tiny", "task=gsm8k", "task.path={tmp}/nowhere"), "is not a folder"),
    "data path is a file": Case(("model=tiny", "task=gsm8k", "task.path={tmp}/data/train.jsonl"), "is not a folder",
                                gsm8k_dir()),
    "no train.jsonl": Case(GSM8K, "has no train.jsonl", gsm8k_dir(train=None)),
    "no test.jsonl": Case(GSM8K, "has no test.jsonl", gsm8k_dir(test=None)),
    "empty train file": Case(GSM8K, "train.jsonl holds no rows", gsm8k_dir(train="")),
    "blank test file": Case(GSM8K, "test.jsonl holds no rows", gsm8k_dir(test="\n\n")),
    "row without answer": Case(GSM8K, "train.jsonl line 2: no 'answer' text",
                               gsm8k_dir(train=jsonl(GOOD_ROW, {"question": "q?"}))),
    "row without question": Case(GSM8K, "test.jsonl line 1: no 'question' text",
                                 gsm8k_dir(test=jsonl({"answer": "#### 3"}))),
    "answer without ####": Case(GSM8K, "line 1: the answer does not end in '#### <number>'",
                                gsm8k_dir(train=jsonl({"question": "q?", "answer": "seven"}))),
    "gold not a number": Case(GSM8K, "line 1: the answer does not end in '#### <number>'",
                              gsm8k_dir(test=jsonl({"question": "q?", "answer": "#### seven"}))),
    "row not JSON": Case(GSM8K, "train.jsonl line 2 is not JSON", gsm8k_dir(train=jsonl(GOOD_ROW, "{oops"))),
    "row a list": Case(GSM8K, "line 1: a row is a JSON list", gsm8k_dir(train=jsonl([1, 2]))),
    "answer a number": Case(GSM8K, "line 1: no 'answer' text",
                            gsm8k_dir(train=jsonl({"question": "q?", "answer": 7}))),
    "binary garbage": Case(GSM8K, "train.jsonl line 1 is not JSON", gsm8k_dir(train="\x00\x01\xff garbage")),
    # model files
    "hub folder missing": Case((*HUB, "model.path={tmp}/no/such/model"), "no such folder"),
    "hub folder without config.json": Case((*HUB, "model.path={tmp}/data"), "has no config.json", gsm8k_dir()),
    "hub config.json garbage": Case((*HUB, "model.path={tmp}/m"), "config.json is unreadable",
                                    lambda tmp: (tmp / "m").mkdir() or (tmp / "m" / "config.json").write_text("{")),
    "hub id malformed": Case((*HUB, "model.path=org/a..b"), "neither a folder nor a hub id"),
    "gguf package not installed": Case(("model.gguf_package=no_such_package",), "is not installed"),
    "gguf file missing": Case(("model.gguf_file=missing.gguf",), "model.gguf_file='missing.gguf' is not in"),
    "gguf folder missing": Case(("model.path={tmp}/nowhere",), "model.path="),
    "gguf file garbage": Case(("model.path={tmp}/m", "model.gguf_file=x.gguf"), "is not a readable GGUF file",
                              lambda tmp: (tmp / "m").mkdir() or (tmp / "m" / "x.gguf").write_bytes(b"GGUF\x03")),
    "gguf file not gguf": Case(("model.path={tmp}/m", "model.gguf_file=x.gguf"), "no GGUF magic number",
                               lambda tmp: (tmp / "m").mkdir() or (tmp / "m" / "x.gguf").write_text("hello")),
    # an earlier run's folder (profile.from_run)
    "from_run missing": Case(("model=tiny", "strategy=proportional", "profile.from_run={tmp}/gone"), "no such folder"),
    "from_run without result": Case(FROM_RUN, "no job record", lambda tmp: (tmp / "run").mkdir()),
    "from_run result truncated": Case(FROM_RUN, "unreadable", earlier_run(result='{"status": "ok", "jo')),
    "from_run result null": Case(FROM_RUN, "not a job record", earlier_run(result="null")),
    "from_run result a list": Case(FROM_RUN, "not a job record", earlier_run(result="[]")),
    "from_run result wrong shape": Case(FROM_RUN, "result.json", earlier_run(result='{"job": "x"}')),
    "from_run other schema": Case(FROM_RUN, "schema version 99",
                                  earlier_run(result=json.dumps({"schema_version": 99}))),
    "from_run without grads": Case(FROM_RUN, f"has no gradient records ({GRADS})", earlier_run(phase=None)),
    "from_run grads garbage": Case(FROM_RUN, f"{GRADS} is unreadable", earlier_run(grads=b"PAR1 not parquet")),
    "from_run not a profile": Case(FROM_RUN, "a random job's training gradients are no uniform-rank profile",
                                   earlier_run(strategy="random")),
    "from_run other model": Case(FROM_RUN, "profiled 30 layers, this model has 12",
                                 earlier_run(phase="profile", layers=30)),
    # budgets that cannot be split within the bounds
    "budget too small": Case(("model=tiny", "strategy=random", "budget.fraction=0.1"), "budget.fraction=0.1"),
    "budget too large": Case(("model=tiny", "strategy=random", "lora.r_max=8", "budget.fraction=1.5"),
                             "budget.fraction=1.5"),
    "reduced uniform under r_min": Case(("model=tiny", "budget=reduced70", "lora.r_min=8"), "budget.fraction=0.7"),
    "default model budget too small": Case(("strategy=random", "budget.fraction=0.2"), "on 30 layers"),
    # evaluation with vLLM: what it cannot load, and (on this machine) no vllm or no GPU
    "vllm eval of the tiny model": Case(("model=tiny", "eval.backend=vllm"), "eval.backend='vllm': vLLM loads a model"),
    "vllm eval of adalora": Case(("strategy=adalora", "eval.backend=vllm"), "trains an AdaLoRA adapter"),
    "vllm eval here": Case(("eval.backend=vllm",), "eval.backend=vllm "),
    "unknown eval backend": Case(("eval.backend=sglang",), "eval.backend='sglang': unknown evaluation backend"),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_catalogue_is_broad():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_before_any_model_loads(name, tmp_path, no_model_loads):
    case = CASES[name]
    if case.files:
        case.files(tmp_path)
    before = snapshot(tmp_path)
    line = refused([o.replace("{tmp}", str(tmp_path)) for o in case.overrides])
    assert "\n" not in line and line.startswith("grpo-rank: ")
    assert case.expect.replace("{tmp}", str(tmp_path)) in line
    assert snapshot(tmp_path) == before  # an earlier run's folder or a data file is only read


@pytest.mark.parametrize("overrides, files", [
    (GSM8K, gsm8k_dir(train=jsonl(GOOD_ROW, "", GOOD_ROW))),  # blank lines are no rows, not errors
    (FROM_RUN, earlier_run()),  # a finished uniform job's training is a profile
    (FROM_RUN, earlier_run(strategy="proportional", phase="profile")),  # so is a job's profile phase
    (("model=tiny", "strategy=random", "budget.fraction=0.5"), None),  # 48 = 12 layers x r_min 4
    (("model=tiny", "budget=reduced70"), None),
    (("model=tiny", "strategy=adalora", "adalora.init_r=8", "budget=reduced70"), None),  # 96 masked down to 68
    (("strategy=uniform", "budget.fraction=0.5", "lora.r_min=4"), None),  # SmolLM2's 30 layers x 4 = 120
    (("eval.split=train",), None),
    (("experiment=paper", "task.path={tmp}/data", "grpo.use_vllm=null"), gsm8k_dir()),  # a hub id: not checked
])
def test_good_inputs_pass(overrides, files, tmp_path, no_model_loads):
    if files:
        files(tmp_path)
    cfg = prepare(compose(*(o.replace("{tmp}", str(tmp_path)) for o in overrides)))
    assert cfg.model.name


def test_checks_import_no_heavy_library():
    """Bad input is reported before torch, transformers, datasets or TRL are imported (seconds each)."""
    code = ("import sys, grpo_rank.config.schema, grpo_rank.pipeline.preflight, grpo_rank.errors; "
            "print(sorted({'torch', 'transformers', 'datasets', 'trl', 'peft'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_task_never_serves_another_split():
    """eval.split=tset once evaluated on the training split and exited 0."""
    with pytest.raises(InputError, match="split 'tset' of task 'arithmetic' is unknown"):
        load_split(TaskConfig(name="arithmetic"), "tset")


def cli(tmp_path: Path, *args: str, env: dict | None = None):
    return run_cli(["grpo_rank.run", *args], cwd=tmp_path, env_extra={"WANDB_MODE": "disabled", **(env or {})},
                   timeout=300)


def assert_one_line_exit_2(proc, expect: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("grpo-rank: ")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr[-2000:]
    assert "loading model" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, expect", [
    (("lora.rank=8",), "lora.rank"),  # Hydra's composition error, as one line
    (("strategy=greedy",), "strategy/greedy"),
    (("model=tiny", "grpo.learning_rate=-1"), "grpo.learning_rate=-1.0: must be > 0"),
    (("model=tiny", "task=gsm8k", "task.path=nowhere"), "task.path='nowhere' is not a folder"),
])
def test_cli_bad_input_exits_2_with_one_line(args, expect, tmp_path):
    assert_one_line_exit_2(cli(tmp_path, *args, f"hydra.run.dir={tmp_path}/job"), expect)


def test_cli_full_error_shows_the_traceback(tmp_path):
    proc = cli(tmp_path, "model=tiny", "grpo.learning_rate=-1", f"hydra.run.dir={tmp_path}/job",
               env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 2 and "grpo.learning_rate=-1.0" in proc.stderr
    assert "Traceback" in proc.stdout + proc.stderr  # the debugging path keeps the stack


def test_sweep_records_the_bad_job_failed_and_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(tmp_path, "-m", *TINY, "dry_run=true", "lora.dropout=0.1,1.5", f"hydra.sweep.dir={sweep}")
    assert "Traceback" not in proc.stderr
    events = {p.parent.name: read_jsonl(p) for p in sweep.glob(f"*/{RUNS}")}
    assert len(events) == 2, proc.stderr[-2000:]
    failed = [e for rows in events.values() for e in rows if e["event"] == "failed"]
    assert len(failed) == 1 and "lora.dropout=1.5: must be in [0, 1)" in failed[0]["detail"]
    good = [name for name, rows in events.items() if rows[-1]["event"] == "dry_run"]
    assert len(good) == 1 and (sweep / good[0] / RESULT).exists()
    assert proc.returncode != 0  # the sweep says a job failed
