"""Part ``llava``: the tiny random LLaVA of ``tests/test_vlm_llava.py`` with tiny-clip swapped in, on the device:
load, generate, RobustVLM's attack ensemble and the targeted-string attack."""
from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from gpu_parts.common import EPS, ROOT, Recorder, sync
from gpu_parts.markdown import table


def _tiny_llava_builders():
    """``tiny_llava`` and ``tiny_tokenizer`` of tests/test_vlm_llava.py: the project's offline tiny random LLaVA."""
    spec = importlib.util.spec_from_file_location("_gpu_check_llava", ROOT / "tests" / "test_vlm_llava.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_llava, module.tiny_tokenizer


def run(rec: Recorder, s: dict) -> None:
    from simclip_bench.data.shapes import ShapesDataset
    from simclip_bench.devices import resolve_precision
    from simclip_bench.tasks.vlm_attack import VLMAttackConfig, attack_vlm, targeted_string_attack
    from simclip_bench.vlm.load import load_vlm

    device = torch.device(s["device"])
    v = s["sizes"]["llava"]
    tiny_llava, tiny_tokenizer = _tiny_llava_builders()
    folder = Path(tempfile.mkdtemp(dir=s["work"], prefix="llava-"))
    tiny_llava().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    t0 = time.perf_counter()
    vlm = load_vlm(f"llava:{folder}", "tiny-clip", device).vlm
    info = {"vlm": "tiny random LLaVA (tests/test_vlm_llava.py) through load_vlm('llava:<folder>', 'tiny-clip')",
            "device": str(vlm.device), "load_s": round(time.perf_counter() - t0, 2), "n_images": v["n"]}
    rec.put("llava", info)
    x = ShapesDataset("test", size=v["n"], image_size=vlm.image_size).tensors()[0].to(device)
    prompts = [vlm.caption_prompt()] * v["n"]
    t0 = time.perf_counter()
    clean = vlm.generate(x, prompts, max_new_tokens=v["max_new_tokens"])
    sync(device)
    info.update(generate_s=round(time.perf_counter() - t0, 3), clean_texts=clean[:4])
    rec.put("llava", info)
    precision = resolve_precision("auto", device)
    config = VLMAttackConfig(eps=EPS, n_iter=v["iterations"], targets=("Maybe", "Word"), batch_size=v["n"],
                             max_new_tokens=v["max_new_tokens"], precision=precision)

    changed: set[int] = set()

    def score(indices, texts):  # constant, so no sample stops early and every run of the ensemble runs
        changed.update(i for i, t in zip(indices, texts, strict=True) if t != clean[i])
        return [1.0] * len(texts)

    runs: list[str] = []
    t0 = time.perf_counter()
    outcome = attack_vlm(vlm, x, prompts, [["a red circle", "a blue square"]] * v["n"], score, clean,
                         [1.0] * v["n"], config, on_run_done=runs.append)
    sync(device)
    info.update(ensemble_s=round(time.perf_counter() - t0, 2), ensemble_precision=precision, ensemble_runs=runs,
                texts_changed=len(changed), worst_case_texts=outcome.texts[:4], ensemble_iterations=v["iterations"])
    rec.put("llava", info)
    t0 = time.perf_counter()
    _, texts, success = targeted_string_attack(vlm, x[:2], prompts[:2], "Maybe", EPS, n_iter=v["iterations"],
                                               batch_size=2, max_new_tokens=v["max_new_tokens"])
    sync(device)
    info.update(targeted_s=round(time.perf_counter() - t0, 2), targeted_success=success, targeted_texts=texts)
    rec.put("llava", info)


def markdown(report: dict) -> list[str]:
    ll = report["parts"].get("llava", {}).get("results", {}).get("llava")
    if not ll:
        return []
    return ["", "## Tiny random LLaVA (tiny-clip tower)", ""] + table(
        ["device", "load s", "generate s", "ensemble s", "runs", "texts changed", "targeted s", "targeted success"],
        [[ll.get("device"), ll.get("load_s"), ll.get("generate_s"), ll.get("ensemble_s"),
          " ".join(ll.get("ensemble_runs", [])), ll.get("texts_changed"), ll.get("targeted_s"),
          ll.get("targeted_success")]])
