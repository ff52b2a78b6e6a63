"""Attacks on a VLM's generated text: RobustVLM's ensemble protocol and the targeted-string attack.

**Ensemble** (Schlarmann, Singh, Croce, Hein, ICML 2024, "Robust CLIP", captioning/VQA protocol):

1. one APGD run (100 iterations, l-inf) per ground-truth text, each maximising the language-model loss
   of that text (captioning: up to 5 reference captions; VQA: up to 5 distinct human answers, most
   frequent first), in reduced precision (bf16 autocast on CUDA; on a CPU the runs stay in float32);
2. VQA adds targeted runs that minimise the loss of the answers "Maybe" and "Word";
3. after every run the model generates from the adversarial image and the sample's task score
   (CIDEr-D or VQA accuracy) is computed; per sample the lowest score so far is kept, with its image
   (the clean image counts: it is inside the eps-ball, so the adversarial score never exceeds the clean one);
4. a sample whose score is at or below ``stop_at`` is not attacked again (RobustVLM: CIDEr 10 on the
   printed scale for COCO, i.e. 0.10 here; 2 for Flickr30k; VQA accuracy 0);
5. a final APGD run in float32 starts from each sample's best perturbation, on the loss of the text
   whose run found it.

Every run is checked to stay inside the eps-ball and [0,1]. ``single`` is one APGD run on the first
ground-truth text, a weaker attack (the Sim-CLIP paper's numbers were measured this way): numbers from the
two protocols are not comparable, and the rows say which protocol made them.

**Targeted string** (RobustVLM's targeted captioning attack): APGD minimising the loss of a target text
(default eps 2/255); success means the target appears in the generated text.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import check_perturbation, loss_and_grad
from simclip_bench.devices import autocast
from simclip_bench.tasks.lm_objective import LanguageModelObjective
from simclip_bench.vlm.base import VisionLanguageModel

PROTOCOLS: tuple[str, ...] = ("ensemble", "single")
VQA_TARGETS: tuple[str, ...] = ("Maybe", "Word")
ScoreFn = Callable[[Sequence[int], Sequence[str]], list[float]]


@dataclass
class VLMAttackConfig:
    """One attack setting. ``eps`` in pixel units; ``stop_at`` on the task's score scale."""

    eps: float
    n_iter: int = 100
    protocol: str = "ensemble"
    max_references: int = 5
    targets: tuple[str, ...] = ()
    stop_at: float = 0.0
    batch_size: int = 64
    seed: int = 0
    max_new_tokens: int = 20

    def describe(self) -> dict:
        return {"protocol": self.protocol, "iterations": self.n_iter, "max_references": self.max_references,
                "targets": list(self.targets), "stop_at": self.stop_at, "seed": self.seed,
                "final_fp32_from_best": self.protocol == "ensemble"}


@dataclass
class VLMAttackOutcome:
    """Per sample: the worst-case adversarial image, its text and score, the run that found it, ℓ∞ norm."""

    x_adv: torch.Tensor
    texts: list[str]
    scores: list[float]
    fooled_by: list[str]
    norms: torch.Tensor


class APGDFromStart(APGD):
    """APGD whose iterate starts at given points instead of a random start (for the final fp32 run).

    The engine's APGD always starts at random; this subclass re-initialises each entering slot at
    ``start`` (same shape as the attacked images). One restart only.
    """

    def __init__(self, start: torch.Tensor, eps: float, **kwargs) -> None:
        super().__init__(eps, n_restarts=1, **kwargs)
        self.start = start.detach()

    def _enter(self, objective, x, idx, seeds, positions):
        slots = super()._enter(objective, x, idx, seeds, positions)
        start = self.start[positions]
        loss, success, grad = loss_and_grad(objective, start, idx[positions])
        slots.x_adv, slots.x_prev, slots.x_best, slots.x_found = start.clone(), start.clone(), start.clone(), start
        slots.grad, slots.grad_best = grad, grad.clone()
        slots.loss_best, slots.loss_best_last_check = loss.clone(), loss.clone()
        slots.found = success.clone()
        return slots


def attack_texts(references: Sequence[str], max_references: int, distinct_by_frequency: bool) -> list[str]:
    """The ground-truth texts to attack with: the first ``max_references`` (captions), or the most frequent
    distinct ones (VQA human answers; ties keep their first appearance)."""
    if distinct_by_frequency:
        counts = Counter(references)
        order = sorted(counts, key=lambda a: (-counts[a], references.index(a)))
        return order[:max_references]
    return list(references[:max_references])


def _generate(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str], batch: int,
              max_new_tokens: int) -> list[str]:
    out: list[str] = []
    for s in range(0, len(x), batch):
        out += vlm.generate(x[s:s + batch], list(prompts[s:s + batch]), max_new_tokens=max_new_tokens)
    return out


def attack_vlm(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str],
               ground_truth: Sequence[Sequence[str]], score: ScoreFn, clean_texts: Sequence[str],
               clean_scores: Sequence[float], config: VLMAttackConfig,
               on_run_done: Callable[[str], None] | None = None) -> VLMAttackOutcome:
    """Run the protocol of ``config`` on images ``x`` (N, 3, H, W) in [0,1].

    ``ground_truth[i]`` are the texts to attack sample i with (see :func:`attack_texts`); ``score(indices,
    texts)`` gives the task score of generated texts; ``clean_texts``/``clean_scores`` the clean outcome.
    """
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}; choose one of {PROTOCOLS}")
    n = len(x)
    device = x.device
    best_x = x.clone()
    best_text, best_score = list(clean_texts), list(clean_scores)
    fooled_by = [""] * n
    best_source: list[tuple[str, bool] | None] = [None] * n
    runs: list[tuple[str, list[str | None], bool]] = []
    n_gt = 1 if config.protocol == "single" else config.max_references
    for j in range(n_gt):
        runs.append((f"apgd-gt{j + 1}", [g[j] if j < len(g) else None for g in ground_truth], False))
    if config.protocol == "ensemble":
        runs += [(f"apgd-target:{t}", [t] * n, True) for t in config.targets]

    def run_once(name: str, texts: list[str | None], targeted: bool, start: torch.Tensor | None,
                 precision) -> None:
        active = [i for i in range(n) if texts[i] is not None and best_score[i] > config.stop_at]
        if not active:
            return
        idx = torch.tensor(active, device=device)
        objective = LanguageModelObjective(vlm, prompts, [t or "" for t in texts], targeted=targeted)
        kwargs = {"n_iter": config.n_iter, "batch_size": config.batch_size, "seed": config.seed}
        attack = APGD(config.eps, **kwargs) if start is None else APGDFromStart(start[idx], config.eps, **kwargs)
        with precision:
            result = attack.run(objective, x[idx], idx)
        check_perturbation(result.x_adv, x[idx], config.eps)
        texts_adv = _generate(vlm, result.x_adv, [prompts[i] for i in active], config.batch_size,
                              config.max_new_tokens)
        for k, (i, s) in enumerate(zip(active, score(active, texts_adv), strict=True)):
            if s < best_score[i]:
                best_score[i], best_text[i], fooled_by[i] = s, texts_adv[k], name
                best_x[i] = result.x_adv[k]
                best_source[i] = (texts[i], targeted)
        if on_run_done:
            on_run_done(name)

    for name, texts, targeted in runs:
        run_once(name, texts, targeted, None, autocast(device))
    if config.protocol == "ensemble":
        # Final float32 run from the best perturbation, on the text whose run found it.
        source = [best_source[i] or (ground_truth[i][0] if ground_truth[i] else None, False) for i in range(n)]
        for targeted in (False, True):
            texts = [s[0] if s[1] == targeted else None for s in source]
            run_once("apgd-fp32-final", texts, targeted, best_x.clone(), contextlib.nullcontext())
    norms = check_perturbation(best_x, x, config.eps)
    return VLMAttackOutcome(x_adv=best_x, texts=best_text, scores=best_score, fooled_by=fooled_by, norms=norms)


def targeted_string_attack(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str], target: str,
                           eps: float, n_iter: int = 500, batch_size: int = 64, seed: int = 0,
                           max_new_tokens: int = 20) -> tuple[torch.Tensor, list[str], list[bool]]:
    """APGD towards ``target``; returns adversarial images, generated texts and success (target in the text)."""
    idx = torch.arange(len(x), device=x.device)
    objective = LanguageModelObjective(vlm, prompts, [target] * len(x), targeted=True)
    with autocast(x.device):
        result = APGD(eps, n_iter=n_iter, batch_size=batch_size, seed=seed).run(objective, x, idx)
    check_perturbation(result.x_adv, x, eps)
    texts = _generate(vlm, result.x_adv, prompts, batch_size, max_new_tokens)
    return result.x_adv, texts, [target.strip().lower() in t.lower() for t in texts]
