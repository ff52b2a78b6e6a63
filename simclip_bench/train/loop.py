"""The run around the steps: :func:`train` and :func:`resume` drive a :class:`~.session.TrainSession` to the end.

A new run gets its directory (:func:`simclip_bench.runs.new_run_dir`) and its resolved ``config.json``; a
resumed one loads its checkpoint. Every ``log_every`` steps a metrics record (losses, embedding spread,
throughput; the zero-shot probe every ``probe_every``) goes to ``metrics.jsonl`` and to ``progress``; a
checkpoint every ``save_every`` steps and at the end makes ``--resume`` exact. A diverged step or a
collapse stops the run with the last checkpoint intact (:mod:`.divergence`, :mod:`.collapse`). The end
writes the encoder and the summary line.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from simclip_bench.devices import resolve_device
from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text, save_encoder, state_dict_sha256
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.runs import METRICS_FILE, RUN_CONFIG, new_run_dir
from simclip_bench.train import distributed as ddp
from simclip_bench.train.checkpointing import load_checkpoint, remove_stale_temporaries, save_checkpoint
from simclip_bench.train.config import TrainConfig, config_from_run
from simclip_bench.train.divergence import TrainingDiverged
from simclip_bench.train.session import TrainSession


def train(cfg: TrainConfig, progress: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = print, stop_after: int | None = None) -> Path:
    """Run adversarial fine-tuning; return the run directory (encoder.safetensors, config.json, metrics.jsonl,
    checkpoint.pt). ``stop_after``: leave after that many steps of this session, with a checkpoint to resume."""
    cfg.validate()
    return _run(cfg, None, progress, log, stop_after)


def resume(run_dir: Path, progress: Callable[[int, dict], None] | None = None, log: Callable[[str], None] = print,
           stop_after: int | None = None, device: str | None = None, allow_unsafe_pickle: bool = False) -> Path:
    """Continue the run in ``run_dir`` from its checkpoint; the result is what an uninterrupted run gives.

    ``allow_unsafe_pickle`` (default False) is never taken from the saved config: the file may have changed
    since, so full unpickling needs the caller's say-so again.
    """
    run_dir = Path(run_dir)
    cfg = config_from_run(run_dir)
    if (run_dir / ENCODER_FILENAME).exists():
        raise UserError(f"--resume: {run_dir} is already finished ({ENCODER_FILENAME} exists)")
    if device is not None:
        cfg.device = device
    cfg.allow_unsafe_pickle = allow_unsafe_pickle
    cfg.out = str(run_dir)
    cfg.validate()
    return _run(cfg, run_dir, progress, log, stop_after)


def _metrics_lines(run_dir: Path, up_to_step: int) -> list[str]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= up_to_step and "val_zero_shot_after" not in line]


def _run(cfg: TrainConfig, resume_dir: Path | None, progress, log, stop_after: int | None) -> Path:
    if stop_after is not None and stop_after <= 0:
        raise UserError(f"--stop-after must be a positive integer, got {stop_after}")
    dist = ddp.init_distributed(resolve_device(cfg.device))
    try:
        return _run_session(cfg, resume_dir, progress, log if dist.is_main else (lambda *_: None), stop_after, dist)
    finally:
        ddp.shutdown(dist)


def _run_session(cfg, resume_dir, progress, log, stop_after, dist: ddp.DistInfo) -> Path:
    run_dir = resume_dir or Path(ddp.broadcast_object(str(new_run_dir(cfg.out, cfg.objective)), dist))
    session = TrainSession(cfg, dist, log)
    main = dist.is_main
    if resume_dir is not None:
        if main:
            remove_stale_temporaries(run_dir)  # left by a process killed while writing
        session.load_state_dict(load_checkpoint(run_dir, "cpu"))
        log(f"resuming {run_dir} at step {session.step_count}/{cfg.steps}")
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**asdict(cfg), "out": str(run_dir), "device": str(session.device), "run_id": new_run_id(),
                    "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
                    "base_model": session.loaded.spec, "base_checkpoint_hash": session.loaded.checkpoint_hash,
                    "arch": session.loaded.arch, "eps_value": session.eps, "attack_step_size_value": session.step_size,
                    "data_kind": session.data.kind, "world_size": dist.world_size,
                    "per_rank_micro_batch": session.split.micro, "precision": session.precision}
        atomic_write_text(run_dir / RUN_CONFIG, json.dumps(resolved, indent=2))
    metrics = _metrics_lines(run_dir, session.step_count) if main else []
    saved_step = session.step_count if resume_dir is not None else None  # the step the checkpoint holds

    def save() -> None:
        nonlocal saved_step
        if main:
            save_checkpoint(session.state_dict(), run_dir)
        saved_step = session.step_count

    def write_metrics() -> None:
        if main:
            atomic_write_text(run_dir / METRICS_FILE, "\n".join(metrics) + "\n")

    if session.zero_shot_before is None:
        session.zero_shot_before = session.probe_accuracy()
        if session.zero_shot_before is not None:
            log(f"base {session.loaded.spec}: held-out zero-shot accuracy {session.zero_shot_before:.1%}")
    start, first_step = time.time(), session.step_count
    per_rank_images = 0
    while session.step_count < cfg.steps:
        try:
            report = session.step()
        except TrainingDiverged as e:
            metrics.append(json.dumps({"step": e.step, "stopped": "diverged", "non_finite": e.what}))
            write_metrics()
            raise e.at(run_dir, saved_step) from None
        step = session.step_count
        per_rank_images += cfg.batch_size // dist.world_size
        is_log = step % cfg.log_every == 0 or step == cfg.steps
        is_probe = step % cfg.probe_every == 0 or step == cfg.steps
        if is_log or is_probe:
            keys = sorted(k for k in report if k != "lr")
            values = ddp.mean_over_ranks([report[k] for k in keys] + [session.spread()], session.device, dist)
            record = {"step": step, **{k: round(v, 5) for k, v in zip(keys, values[:-1], strict=True)},
                      "embedding_std_sqrt_d": round(values[-1], 4), "lr": report["lr"]}
            probe = session.probe_accuracy() if is_probe else None
            if probe is not None:
                record["probe_zero_shot"] = round(probe, 4)
            elapsed = time.time() - start
            record.update(images_per_s=round(per_rank_images * dist.world_size / max(elapsed, 1e-9), 1),
                          seconds=round(elapsed, 1),
                          unreadable_images=ddp.sum_over_ranks(session.unreadable, session.device, dist))
            metrics.append(json.dumps(record))
            write_metrics()
            if progress and main:
                progress(step, record)
            try:
                session.watch.check(step, record["embedding_std_sqrt_d"], probe, log)
            except UserError:
                metrics.append(json.dumps({"step": step, "stopped": "collapse"}))
                write_metrics()
                save()
                raise
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
        if stop_after is not None and step - first_step >= stop_after and step < cfg.steps:
            if step % cfg.save_every != 0:
                save()
            log(f"stopped after {stop_after} steps at step {step}/{cfg.steps}; continue with "
                f"'simclip train --resume {run_dir}'")
            return run_dir
    return _finish(session, run_dir, metrics, write_metrics, log, dist)


def _finish(session: TrainSession, run_dir: Path, metrics: list[str], write_metrics, log, dist) -> Path:
    cfg = session.cfg
    session.net.eval()
    digests = ddp.all_gather_objects(state_dict_sha256(session.encoder.visual.state_dict()), dist)
    after = session.probe_accuracy()
    unreadable = ddp.sum_over_ranks(session.unreadable, session.device, dist)
    summary = {"step": cfg.steps, "val_zero_shot_before": session.zero_shot_before, "val_zero_shot_after": after,
               "unreadable_images": unreadable, "world_size": dist.world_size,
               "ranks_agree": len(set(digests)) == 1, "collapse_warned_at_step": session.watch.warned_at_step}
    if session.memory.halved_from:  # the micro-batch that fitted, after running out of memory at larger ones
        summary["micro_batch_after_out_of_memory"] = session.memory.size
    metrics.append(json.dumps(summary))
    if dist.is_main:
        write_metrics()
        save_encoder(session.encoder.visual, run_dir / ENCODER_FILENAME, base_model=session.loaded.spec,
                     arch=session.loaded.arch, extra={"objective": cfg.objective, "eps": cfg.eps, "steps": cfg.steps,
                                                      "anchor_weight": cfg.anchor_weight, "data": cfg.data})
    if unreadable:
        log(f"warning: {unreadable} unreadable training images were skipped (--on-error fail makes them fatal)")
    if after is not None:  # the run directory is the caller's to name (the CLI prints it once, on stdout)
        log(f"held-out zero-shot accuracy {session.zero_shot_before:.1%} -> {after:.1%}")
    return run_dir
