"""``benchmarks/gpu_check.py --dry-run``: every part of the GPU check runs on a CPU, and the report has the keys
the CUDA run will write. Slow: one dry run (about 3 minutes on the loaded 2-core CI machine), shared by the tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("env", "ddp", "cli", "llava", "vlm-prompts", "attacks", "training", "plan", "compile")
TOP_KEYS = {"schema", "mode", "device", "created_at", "command", "budget_s", "total_seconds", "sizes", "env",
            "host_syncs", "parts", "ok"}
PART_KEYS = {"status", "seconds", "limit_s", "rc", "error", "errors", "results"}
RESULT_KEYS = {
    "env": {"env"},
    "ddp": {"torchrun_cli", "process_group"},
    "cli": {"commands"},
    "llava": {"llava"},
    "vlm-prompts": {"vlm_prompts"},
    "attacks": {"ensemble", "ensemble_rows", "precision", "per_iteration_rows", "host_syncs"},
    "training": {"rows", "flop_counting", "peak_tflops", "objective"},
    "compile": {"rows", "flop_counting", "peak_tflops", "objective"},
    "plan": {"rows", "plan_device"},
}
ENV_KEYS = {"torch", "cuda_runtime", "gpu_name", "driver", "open_clip", "transformers", "git_sha", "source_digest"}
TRAIN_ROW_KEYS = {"model", "image_size", "batch", "variant", "precision", "status", "images_per_s", "step_s",
                  "peak_mem_gib", "tflop_per_step", "achieved_tflops", "peak_tflops", "mfu", "attention"}
VARIANTS = {"fp32", "bf16", "bf16+grad-ckpt", "bf16+compile"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=1500)
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, report, (out / "gpu_check.md").read_text(), out


def test_the_dry_run_exits_cleanly_and_says_it_is_one(dry_run):
    proc, report, _, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["mode"] == "dry-run" and report["device"] == "cpu" and report["ok"] is True


def test_every_part_is_present_and_ok(dry_run):
    _, report, _, _ = dry_run
    assert list(report["parts"]) == list(PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", f"{name}: {part['error']}"
        assert part["error"] is None and part["errors"] == [] and part["seconds"] <= part["limit_s"]


def test_the_report_has_the_keys_of_a_gpu_run(dry_run):
    _, report, _, _ = dry_run
    assert set(report) == TOP_KEYS
    for name, part in report["parts"].items():
        assert set(part) == PART_KEYS, name
        assert RESULT_KEYS[name] <= set(part["results"]), name
    assert ENV_KEYS <= set(report["env"])
    assert report["host_syncs"].startswith("n/a")  # sync debug mode is CUDA only


def test_training_measured_every_variant_and_both_architectures(dry_run):
    _, report, _, _ = dry_run
    rows = report["parts"]["training"]["results"]["rows"] + report["parts"]["compile"]["results"]["rows"]
    assert {r["variant"] for r in rows} == VARIANTS
    assert {r["model"] for r in rows} == {"ViT-B-32", "ViT-L-14"}
    for r in rows:
        assert TRAIN_ROW_KEYS <= set(r) and r["status"] == "ok", r
        assert r["images_per_s"] > 0 and r["tflop_per_step"] > 0


def test_attacks_compare_ours_with_the_reference_and_bf16_with_fp32(dry_run):
    _, report, _, _ = dry_run
    results = report["parts"]["attacks"]["results"]
    rows = {(r["implementation"], r["precision"]): r for r in results["ensemble_rows"]}
    assert set(rows) == {("ours", "fp32"), ("reference", "fp32"), ("ours", "bf16")}
    for r in rows.values():
        assert r["status"] == "ok" and r["grad_forward"] > 0 and 0 <= r["robust"] <= 1
    assert results["precision"]["unconfirmed_bf16"] >= 0
    per_iteration = results["per_iteration_rows"]
    assert {r["implementation"] for r in per_iteration} == {"ours", "reference"}
    assert all(r["status"] == "ok" and r["ms_per_image_gradient"] > 0 for r in per_iteration)


def test_the_cli_trained_and_evaluated_end_to_end(dry_run):
    _, report, _, _ = dry_run
    commands = {c["name"]: c for c in report["parts"]["cli"]["results"]["commands"]}
    assert set(commands) == {"train", "eval", "eval --task vqa"}
    assert all(c["status"] == "ok" for c in commands.values())
    assert commands["train"]["results"]["device"] == "cpu"
    for name in ("eval", "eval --task vqa"):
        assert {r["attack"] for r in commands[name]["results"]} >= {"none"} and len(commands[name]["results"]) == 4


def test_the_tiny_llava_generated_and_ran_every_attack_run(dry_run):
    _, report, _, _ = dry_run
    llava = report["parts"]["llava"]["results"]["llava"]
    assert llava["device"] == "cpu" and len(llava["clean_texts"]) == 2
    assert llava["ensemble_runs"] == ["apgd-gt1", "apgd-gt2", "apgd-fp32-final", "apgd-target:Maybe",
                                      "apgd-target:Word"]
    assert len(llava["targeted_success"]) == 2


def test_the_vlm_prompt_path_ran_llava_as_robustvlm_and_openflamingo(dry_run):
    _, report, _, _ = dry_run
    part = report["parts"]["vlm-prompts"]["results"]["vlm_prompts"]
    assert part["checks"] and all(part["checks"].values()), part["checks"]
    assert part["llava"]["prompt"].startswith("<system> USER: <image>\n")
    assert part["llava"]["scored_tokens"][-1] == "</s>" and part["llava"]["generation"]["max_new_tokens"] == 5
    assert part["openflamingo"]["generation"]["num_beams"] == 3


def test_ddp_launched_by_torchrun_and_joined_a_one_rank_gloo_group(dry_run):
    _, report, _, _ = dry_run
    ddp = report["parts"]["ddp"]["results"]
    assert ddp["torchrun_cli"]["status"] == "ok" and ddp["torchrun_cli"]["results"]["world_size"] == 1
    group = ddp["process_group"]["results"]
    assert group["backend"] == "gloo" and group["world_size"] == 1 and group["ranks_agree"] is True


def test_the_markdown_has_a_row_per_part_and_the_tables(dry_run):
    _, _, markdown, out = dry_run
    for name in PARTS:
        assert f"| {name} | ok |" in markdown
    for heading in ("## Training", "## Attacks", "## Per-iteration cost", "## Host syncs", "## CLI end to end",
                    "## Tiny random LLaVA", "## DDP"):
        assert heading in markdown
    assert (out / "gpu_check.log").stat().st_size > 0
