"""The adapter's model card, and `hub.push`: the job's adapter/ folder (weights, config, card) to the Hugging Face Hub.

    python -m grpo_rank.run hub.push=true                         # repo <W&B group>-s<seed>, the token's namespace
    python -m grpo_rank.run hub.push=true hub.repo=me/my-adapter hub.private=false

The Hub is a sink, like W&B: adapter/ in the job folder is the record. With no token (HF_TOKEN, or
`hf auth login`) or with HF_HUB_OFFLINE=1 the push is skipped, and a push that fails (no network, a
refused token) is caught; either way one line is logged, the reason is kept in result.json
(adapter.hub), and the job ends as it would have. The token is read by huggingface_hub, never by us.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from grpo_rank.config.schema import RunConfig
from grpo_rank.errors import one_line
from grpo_rank.record.result import HubInfo, JobIdentity, JobResult
from grpo_rank.training import adapter

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


def default_repo(ident: JobIdentity) -> str:
    """A repo name from the job's identity: its W&B group (model, task, arm, settings hash) and seed."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{ident.group}-s{ident.seed}").strip("-.")[:96]


def publish(cfg: RunConfig, result: JobResult, job_dir: Path) -> None:
    """The model card with what the job ended with; then, with hub.push=true, the push. No adapter: nothing."""
    if result.adapter is None:
        if cfg.hub.push:
            log.info("hub.push: nothing to push, strategy=%s trains no adapter", cfg.strategy.name)
        return
    repo = (cfg.hub.repo or default_repo(result.job)) if cfg.hub.push else None
    adapter.write_card(job_dir, adapter.card(cfg, result, repo))
    if cfg.hub.push:
        message = f"grpo-rank {result.job.name}, config {result.job.config_hash[:12]}"
        result.adapter.hub = push(Path(job_dir) / result.adapter.path, repo, cfg.hub.private, message)


def skip_reason() -> str | None:
    """Why no push can be tried here, or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import get_token

    if not get_token():
        return "no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
    return None


def push(folder: Path, repo: str, private: bool, message: str) -> HubInfo:
    """`folder` to the Hub repo `repo` (created if missing); never raises: a skip or failure is one logged line."""
    reason = skip_reason()
    if reason is None:
        try:
            from huggingface_hub import HfApi

            # HF_ENDPOINT as the environment says now (huggingface_hub reads it once, at its import)
            api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
            url = api.create_repo(repo, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=url.repo_id, folder_path=folder, commit_message=message)
        except Exception as exc:  # the Hub is a sink: the local adapter is the record
            reason = f"push failed: {one_line(exc)}"[:500]
        else:
            log.info("hub.push: adapter pushed to %s", commit.commit_url)
            return HubInfo(repo=url.repo_id, pushed=True, url=commit.commit_url)
    log.warning("hub.push: %s not pushed (%s); the adapter stays in %s", repo, reason, folder)
    return HubInfo(repo=repo, pushed=False, reason=reason)
