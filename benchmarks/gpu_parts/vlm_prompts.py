"""Part ``vlm-prompts``: the LLaVA prompt path as RobustVLM runs it, and OpenFlamingo, on the device.

On a tiny random LLaVA built from configs (``tests/test_vlm_llava.py``) loaded through ``load_vlm('llava:<folder>',
'tiny-clip')``: the vicuna_v1 prompt with its system sentence, a non-square image padded to a square with the
mean colour, greedy generation with the VQA length, the loss with the answer's end token scored (checked against
a hand-computed cross-entropy on the device), and one APGD step in the resolved search precision (bf16 autocast on
CUDA). Then a tiny random OpenFlamingo (``tests/_tiny_openflamingo.py``): RobustVLM's zero-shot prompt, beam-search
generation, gradients reaching the image and one APGD step. ``run(rec, settings)`` is what
``benchmarks/gpu_check.py`` calls (``rec.put(key, value)`` records); ``--dry-run`` runs it on the CPU.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpu_parts.common import EPS, ROOT, sync

SIZES = {"cuda": {"n": 8, "iterations": 5}, "dry-run": {"n": 2, "iterations": 1}}


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _apgd_step(vlm, x, prompts, texts, precision: str, iterations: int) -> dict:
    from simclip_bench.devices import autocast_for
    from simclip_bench.tasks.lm_objective import LanguageModelObjective
    from simclip_bench.tasks.vlm_attack import vlm_apgd

    before = vlm.loss(x, prompts, texts).detach()
    t0 = time.perf_counter()
    with autocast_for(precision, x.device):
        result = vlm_apgd(EPS, iterations, len(x), 0).run(LanguageModelObjective(vlm, prompts, texts), x,
                                                          torch.arange(len(x), device=x.device))
    sync(x.device)
    after = vlm.loss(result.x_adv, prompts, texts).detach()
    return {"precision": precision, "seconds": round(time.perf_counter() - t0, 3),
            "max_perturbation": float((result.x_adv - x).abs().max()),
            "inside_ball": bool((result.x_adv - x).abs().max() <= EPS + 1e-6),
            "loss_before": before.float().mean().item(), "loss_after": after.float().mean().item()}


def _llava(settings: dict, device: torch.device, precision: str) -> dict:
    from simclip_bench.data.vlm_samples import load_image
    from simclip_bench.vlm import llava_prompt as lp
    from simclip_bench.vlm.load import load_vlm

    size = SIZES[settings["mode"]]
    builders = _module(ROOT / "tests" / "test_vlm_llava.py", "_gpu_check_vlm_prompts_llava")
    folder = Path(tempfile.mkdtemp(dir=settings["work"], prefix="llava-prompts-"))
    builders.tiny_llava().save_pretrained(folder)
    builders.tiny_tokenizer().save_pretrained(folder)
    loaded = load_vlm(f"llava:{folder}", "tiny-clip", device)
    vlm = loaded.vlm
    question = "what shape is it ?"
    prompt = vlm.vqa_prompt(question, "vqav2")
    text = lp.conversation(prompt)
    wide = np.zeros((16, 32, 3), dtype=np.uint8)
    wide[..., 0] = 255
    fill = vlm.image_prep("vqa").pad_fill
    x = torch.stack([load_image(wide, vlm.image_size, fill)] * size["n"]).to(device)
    padded_ok = bool(torch.allclose(x[0, :, 0, 0].cpu(), torch.tensor(fill) / 255, atol=1e-6))
    t0 = time.perf_counter()
    answers = vlm.generate_with(x, [prompt] * size["n"], vlm.generation("vqa"))
    sync(device)
    generate_s = round(time.perf_counter() - t0, 3)
    ids, masked = vlm.scored_tokens(prompt, "a red circle")
    loss, _ = vlm.target_scores(x[:1], [prompt], ["a red circle"])
    batch = torch.tensor([ids], device=device)
    with torch.no_grad():
        logits = vlm.model(input_ids=batch, attention_mask=torch.ones_like(batch),
                           pixel_values=vlm._pixels(x[:1])).logits
    by_hand = torch.nn.functional.cross_entropy(logits[0, masked - 1:-1].float(), batch[0, masked:]).item()
    return {"device": str(vlm.device), "vlm_hash": loaded.vlm_hash[:12], "system_sentence": text.startswith(lp.SYSTEM),
            "prompt": text.replace(lp.SYSTEM, "<system>"), "pad_fill": list(fill), "padded_pixels_ok": padded_ok,
            "generation": vlm.generation("vqa").describe(), "generate_s": generate_s, "answers": answers[:2],
            "scored_tokens": vlm.tokenizer.convert_ids_to_tokens(ids[masked:]),
            "loss": round(loss.item(), 5), "loss_by_hand": round(by_hand, 5),
            "loss_matches": abs(loss.item() - by_hand) < 1e-3 * max(1.0, abs(by_hand)),
            "apgd": _apgd_step(vlm, x, [prompt] * size["n"], ["a red circle"] * size["n"], precision,
                               size["iterations"])}


def _openflamingo(settings: dict, device: torch.device, precision: str) -> dict:
    from simclip_bench.vlm.openflamingo import OpenFlamingoVLM

    size = SIZES[settings["mode"]]
    builders = _module(ROOT / "tests" / "_tiny_openflamingo.py", "_gpu_check_vlm_prompts_of")
    model, tokenizer, loaded = builders.tiny_flamingo()
    enc = loaded.model.encoder
    vlm = OpenFlamingoVLM(model.to(device), tokenizer, loaded.model.image_size, enc.mean.flatten().tolist(),
                          enc.std.flatten().tolist(), every=builders.EVERY)
    prompt = vlm.caption_prompt("coco", demos=[("a red circle", None), ("a blue square", None)])
    x = torch.rand(size["n"], 3, vlm.image_size, vlm.image_size, device=device)
    t0 = time.perf_counter()
    captions = vlm.generate_with(x, [prompt] * size["n"], vlm.generation("captioning"))
    sync(device)
    generate_s = round(time.perf_counter() - t0, 3)
    xg = x[:1].clone().requires_grad_(True)
    vlm.loss(xg, [prompt], ["a red circle"]).sum().backward()
    return {"device": str(vlm.device), "prompt": prompt, "generation": vlm.generation("captioning").describe(),
            "generate_s": generate_s, "captions": captions[:2], "image_gradient": float(xg.grad.abs().sum()),
            "apgd": _apgd_step(vlm, x, [prompt] * size["n"], ["a red circle"] * size["n"], precision,
                               size["iterations"])}


def run(rec, settings: dict) -> None:
    """The part: LLaVA's prompt path and OpenFlamingo on ``settings['device']``, recorded as ``vlm_prompts``."""
    from simclip_bench.devices import resolve_precision

    device = torch.device(settings["device"])
    precision = resolve_precision("auto", device)
    info: dict = {"precision": precision}
    rec.put("vlm_prompts", info)
    info["llava"] = _llava(settings, device, precision)
    rec.put("vlm_prompts", info)
    info["openflamingo"] = _openflamingo(settings, device, precision)
    rec.put("vlm_prompts", info)
    checks = {"system_sentence": info["llava"]["system_sentence"], "padded": info["llava"]["padded_pixels_ok"],
              "end_token_scored": info["llava"]["scored_tokens"][-1] == "</s>",
              "loss_matches": info["llava"]["loss_matches"], "llava_ball": info["llava"]["apgd"]["inside_ball"],
              "flamingo_gradient": info["openflamingo"]["image_gradient"] > 0,
              "flamingo_ball": info["openflamingo"]["apgd"]["inside_ball"]}
    info["checks"] = checks
    rec.put("vlm_prompts", info)
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        raise AssertionError(f"vlm-prompts checks failed: {', '.join(failed)}")
