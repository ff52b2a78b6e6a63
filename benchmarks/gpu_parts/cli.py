"""Part ``cli``: ``simclip train``, ``simclip eval`` (APGD-CE) and ``simclip eval --task vqa`` (RobustVLM's
ensemble) as subprocesses on the device, with the numbers they wrote."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from gpu_parts.common import Recorder, guarded, log
from gpu_parts.markdown import pct, table
from gpu_parts.processes import run_command


def _results_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"model": r["model"], "attack": r["attack"], "eps": r["eps_text"], "metric": r["metric"],
             "value": round(float(r["value"]), 4), "n_samples": int(r["n_samples"]), "seconds": r.get("seconds"),
             "device": r.get("device")} for r in rows]


def run(rec: Recorder, s: dict) -> None:
    c, dev, work = s["sizes"]["cli"], s["device"], Path(s["work"]) / "cli"
    py = [sys.executable, "-m", "simclip_bench"]
    run_dir = work / "run"
    commands = [
        ("train", py + ["train", "--steps", str(c["train_steps"]), "--batch-size", str(c["train_batch"]),
                        "--train-size", str(c["train_size"]), "--attack-steps", str(c["attack_steps"]),
                        "--probe-size", str(c["probe_size"]), "--warmup-steps", "1", "--device", dev,
                        "--out", str(run_dir)], None),
        ("eval", py + ["eval", "--model", "tiny-clip", "--model", str(run_dir), "--n-samples", str(c["eval_samples"]),
                       "--iterations", str(c["eval_iterations"]), "--eps", "4/255", "--device", dev,
                       "--out", str(work / "zeroshot")], work / "zeroshot" / "results.csv"),
        ("eval --task vqa", py + ["eval", "--task", "vqa", "--model", "tiny-clip", "--model", str(run_dir),
                                  "--n-samples", str(c["vqa_samples"]), "--iterations", str(c["vqa_iterations"]),
                                  "--eps", "4/255", "--device", dev, "--out", str(work / "vqa")],
         work / "vqa" / "results.csv"),
    ]
    for name, argv, results in commands:
        log(f"cli: simclip {name}")
        out = run_command(argv, c["timeout_each"])
        row = {"command": "simclip " + " ".join(argv[3:]).replace(str(work), "<work>"), "name": name, **out}
        if out["status"] == "ok" and name == "train":
            summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            config = json.loads((run_dir / "config.json").read_text())
            row["results"] = {"device": config.get("device"), "precision": config.get("precision"),
                              "val_zero_shot_before": summary.get("val_zero_shot_before"),
                              "val_zero_shot_after": summary.get("val_zero_shot_after")}
        elif out["status"] == "ok" and results is not None:
            row["results"] = guarded(rec, f"cli {name} results", _results_csv, results)
            for r in row["results"] or []:
                r["model"] = r["model"].replace(str(run_dir), "<run>")
        if out["status"] != "ok":
            rec.data["errors"].append(f"simclip {name}: {out['error']}")
        rec.append("commands", row)


def _summary(c: dict) -> str:
    res = c.get("results")
    if c["status"] != "ok" or not res:
        return c.get("error") or ""
    if isinstance(res, dict):
        return (f"{res.get('device')}, {res.get('precision')}: held-out zero-shot "
                f"{pct(res.get('val_zero_shot_before'))} -> {pct(res.get('val_zero_shot_after'))}")
    return "; ".join(f"{r['model'].split('/')[-1]} {r['attack']} {r['eps'] if r['attack'] != 'none' else ''} "
                     f"{r['value']:.3f}".replace("  ", " ") for r in res)


def markdown(report: dict) -> list[str]:
    cl = report["parts"].get("cli", {}).get("results", {})
    if not cl.get("commands"):
        return []
    return ["", "## CLI end to end", ""] + table(["command", "status", "s", "result"],
                                                 [[c["command"], c["status"], c["seconds"], _summary(c)]
                                                  for c in cl["commands"]])
