"""Part ``ddp``: ``torchrun --nproc_per_node 1 -m simclip_bench train`` (with one process the library trains as a
single process), then a 1-rank process group (NCCL on CUDA, gloo on a CPU) forced through the library's DDP path
(:func:`worker`, started as ``gpu_check.py --ddp-worker SETTINGS`` under torchrun)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

from gpu_parts.common import ROOT, Recorder, log
from gpu_parts.markdown import table
from gpu_parts.processes import run_command


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]


def run(rec: Recorder, s: dict) -> None:
    d, dev, work = s["sizes"]["ddp"], s["device"], Path(s["work"]) / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    args = ["--steps", str(d["steps"]), "--batch-size", str(d["batch"]), "--train-size", str(d["batch"] * 2),
            "--probe-size", "0", "--attack-steps", str(d["attack_steps"]), "--warmup-steps", "1", "--log-every", "1",
            "--device", dev]
    log("ddp: torchrun --nproc_per_node 1 -m simclip_bench train")
    cli = run_command(_torchrun() + ["-m", "simclip_bench", "train", *args, "--out", str(work / "cli")],
                      d["timeout_each"])
    if cli["status"] == "ok":
        summary = json.loads((work / "cli" / "metrics.jsonl").read_text().splitlines()[-1])
        cli["results"] = {"world_size": summary["world_size"], "ranks_agree": summary["ranks_agree"],
                          "process_group": "none: with WORLD_SIZE=1 the library trains as a single process "
                                           "(train/distributed.py launched_by_torchrun)"}
    else:
        rec.data["errors"].append(f"torchrun -m simclip_bench train: {cli['error']}")
    rec.put("torchrun_cli", cli)
    log("ddp: torchrun, 1-rank process group through the library's DDP path")
    result = work / "worker.json"
    settings = work / "worker-settings.json"
    settings.write_text(json.dumps({"device": dev, "out": str(work / "pg"), "result": str(result), **d}))
    pg = run_command(_torchrun() + [str(ROOT / "benchmarks" / "gpu_check.py"), "--ddp-worker", str(settings)],
                     d["timeout_each"])
    if pg["status"] == "ok":
        pg["results"] = json.loads(result.read_text())
    else:
        rec.data["errors"].append(f"1-rank process group: {pg['error']}")
    rec.put("process_group", pg)


def worker(settings_path: str) -> None:
    """Under torchrun with one process: the library's DDP path (process group, DDP wrapper, all-reduces,
    object collectives), which it takes only for WORLD_SIZE > 1, forced on for a group of one."""
    from simclip_bench.train import distributed as ddp
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.loop import train

    d = json.loads(Path(settings_path).read_text())
    seen: dict = {}
    real_init = ddp.dist.init_process_group

    def init(backend=None, *args, **kwargs):
        seen["backend"] = backend
        return real_init(backend, *args, **kwargs)

    cfg = TrainConfig(steps=d["steps"], batch_size=d["batch"], train_size=d["batch"] * 2, probe_size=0,
                      attack_steps=d["attack_steps"], warmup_steps=1, log_every=1, device=d["device"], out=d["out"])
    with mock.patch.object(ddp, "launched_by_torchrun", lambda: True), \
            mock.patch.object(ddp.DistInfo, "enabled", property(lambda self: True)), \
            mock.patch.object(ddp.dist, "init_process_group", init):
        run_dir = train(cfg, log=lambda *_: None)
    summary = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    config = json.loads((Path(run_dir) / "config.json").read_text())
    Path(d["result"]).write_text(json.dumps({
        "backend": seen.get("backend"), "device": config.get("device"), "world_size": summary["world_size"],
        "ranks_agree": summary["ranks_agree"], "steps": summary["step"],
        "process_group": "joined (DistInfo.enabled forced on): DDP wrapper, gradient all-reduce, the divergence "
                         "all-reduce, metric all-reduces and object collectives ran"}))


def markdown(report: dict) -> list[str]:
    dd = report["parts"].get("ddp", {}).get("results", {})
    if not dd:
        return []
    rows = []
    for key, label in (("torchrun_cli", "torchrun -m simclip_bench train"), ("process_group", "1-rank group")):
        r = dd.get(key) or {}
        res = r.get("results") or {}
        rows.append([label, r.get("status"), r.get("seconds"), res.get("backend"), res.get("world_size"),
                     res.get("ranks_agree"), res.get("process_group") or r.get("error")])
    return ["", "## DDP (torchrun, 1 process)", ""] + table(
        ["run", "status", "s", "backend", "world size", "ranks agree", "note"], rows)
