"""The deliberate differences of the LLaVA path from RobustVLM's, measured on the tiny random LLaVA
(tests/test_vlm_llava.py) with the built-in tiny-clip swapped in, RobustVLM's prompts and labels:

* batches (RobustVLM: batch size 1): the ensemble attack run with batches of 1 and of N on the same images;
  the largest difference of the returned images and whether every generated text agrees;
* bf16 search (RobustVLM: the model cast to float16): the language-model loss (fp32) each search precision
  reaches with APGD on the same images (higher is a stronger untargeted attack), and float16 autocast too.

    OMP_NUM_THREADS=1 python benchmarks/llava_prompt_path.py --n 8 --iterations 20
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["a red circle", "a blue square", "a photo of a circle", "a red square"]


def tiny_llava_vlm():
    spec = importlib.util.spec_from_file_location("_llava_builders", ROOT / "tests" / "test_vlm_llava.py")
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    from simclip_bench.models.hf_vision import open_clip_to_hf_vision
    from simclip_bench.models.spec import load_model
    from simclip_bench.vlm.llava import LlavaVLM, swap_vision_tower

    loaded = load_model("tiny-clip", "cpu")
    model = builders.tiny_llava()
    swap_vision_tower(model, open_clip_to_hf_vision(loaded.model.clip.visual))
    enc = loaded.model.encoder
    return LlavaVLM(model, builders.tiny_tokenizer(), mean=enc.mean.flatten().tolist(), std=enc.std.flatten().tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    from simclip_bench.data.vlm_samples import shapes_captioning
    from simclip_bench.tasks.lm_objective import LanguageModelObjective
    from simclip_bench.tasks.vlm_attack import VQA_TARGETS, VLMAttackConfig, attack_vlm, vlm_apgd

    vlm = tiny_llava_vlm()
    data = shapes_captioning(args.n)
    x = data.images(vlm.image_size, pad_fill=vlm.image_prep("captioning").pad_fill)
    prompts = [vlm.caption_prompt("coco")] * args.n
    truth = [[TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]] for i in range(args.n)]
    clean = vlm.generate_with(x, prompts, vlm.generation("captioning"))

    def constant(indices, texts):  # no sample stops: every run of the ensemble runs on every sample
        return [1.0] * len(texts)

    outcomes = {}
    for batch in (1, args.n):
        config = VLMAttackConfig(eps=4 / 255, n_iter=args.iterations, targets=VQA_TARGETS, batch_size=batch,
                                 generation=vlm.generation("captioning"))
        t0 = time.perf_counter()
        outcomes[batch] = attack_vlm(vlm, x, prompts, truth, constant, clean, [1.0] * args.n, config)
        print(f"ensemble, batch {batch}: {time.perf_counter() - t0:.1f} s")
    a, b = outcomes[1], outcomes[args.n]
    print(f"batch 1 vs {args.n}: max |x_adv difference| = {(a.x_adv - b.x_adv).abs().max().item():.2e}, "
          f"texts equal: {sum(p == q for p, q in zip(a.texts, b.texts, strict=True))}/{args.n}")
    first = [t[0] for t in truth]
    reached = {}
    for precision in ("fp32", "bf16", "fp16"):
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        idx = torch.arange(args.n)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            result = vlm_apgd(4 / 255, args.iterations, args.n, 0).run(LanguageModelObjective(vlm, prompts, first), x,
                                                                       idx)
        with torch.no_grad():
            reached[precision] = vlm.loss(result.x_adv, prompts, first).tolist()
    clean_loss = statistics.fmean(vlm.loss(x, prompts, first).tolist())
    print(f"APGD {args.iterations} it., eps 4/255, mean fp32 loss of the first text (clean {clean_loss:.4f}): "
          + ", ".join(f"{p} search {statistics.fmean(v):.4f}" for p, v in reached.items()))


if __name__ == "__main__":
    main()
