"""Attacks on a VLM's generated text: RobustVLM's ensemble protocol and the targeted-string attack.

**Ensemble** (Schlarmann, Singh, Croce, Hein, ICML 2024, "Robust CLIP"; the protocol of record is
chs20/RobustVLM ``vlm_eval/run_evaluation.py`` with ``--attack ensemble``), field by field:

1. the clean output counts as the first run: a sample whose clean score is already below the threshold
   is never attacked;
2. one APGD run per ground-truth text (captioning: the first 5 reference captions; VQA: the 5 most
   frequent distinct human answers, skipped where there are fewer), each maximising the language-model
   loss of that text: 100 iterations, l-inf, **from the clean image** (no random start), first step
   **1·eps** (``initial_stepsize=1.0``), no early stopping; the run returns its point of highest loss.
   These runs use the reduced search precision (``precision``: bf16 on CUDA; RobustVLM casts LLaVA to
   float16, whose backward pass underflows without loss scaling, see :mod:`simclip_bench.devices`);
3. after every run the model generates from the run's image and the sample's task score (CIDEr-D or
   VQA accuracy) is computed; per sample the lowest score so far is kept, with its image and the text
   whose run found it (a tie keeps the earlier run). A sample stops being attacked once its score is
   **strictly below** ``stop_below`` (CIDEr 10 on the printed scale for COCO, i.e. 0.10 here; 2 for
   Flickr30k), or at 0, where no score can fall further (RobustVLM's VQA rule: accuracy 0);
4. a float32 APGD run **from each sample's best point so far** (the clean image when nothing beat it),
   on the text whose run found it (the first ground truth when none did);
5. VQA only: targeted float32 runs towards "maybe" and then "Word", **from the clean image**, minimising
   the loss of the target answer (RobustVLM names the runs ``apgd-maybe`` and ``apgd-Word`` and targets the
   text after the dash, so the first target is lower-case).

Every output that is scored is generated in float32 (the model whose numbers are reported); RobustVLM
generates the outputs of its float16 runs with the float16 model. Every run is checked to stay inside
the eps-ball and [0,1]. ``single`` is one APGD run on the first ground-truth text, with the same settings:
a weaker attack (the Sim-CLIP paper's numbers were measured this way), so the rows say which protocol
made them.

**Targeted string** (RobustVLM ``bash/llava_eval_targeted.sh``): APGD from the clean image minimising
the loss of a target text, eps 2/255, 10 000 iterations, first step 1·eps, float32; success = the target
appears in the generated text. Ours stops a sample once a float32 generation confirms the target (the
reference runs on and judges only its final point, so ours succeeds wherever it does).
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.cost import CountedObjective
from simclip_bench.devices import autocast_for
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.tasks.lm_objective import LanguageModelObjective, TargetStringObjective, contains_target
from simclip_bench.vlm.base import Generation, VisionLanguageModel

PROTOCOLS: tuple[str, ...] = ("ensemble", "single")
# evaluate_vqa: ("apgd-maybe", ...), ("apgd-Word", ...); target_str = the run name after "-"
VQA_TARGETS: tuple[str, ...] = ("maybe", "Word")
# RobustVLM's APGD for VLMs: first step 1·eps from the clean image (vlm_eval/run_evaluation.py).
VLM_INITIAL_STEP = 1.0
TARGETED_STRING_ITERATIONS = 10_000  # bash/llava_eval_targeted.sh: --steps 10000, float32
ScoreFn = Callable[[Sequence[int], Sequence[str]], list[float]]


@dataclass
class VLMAttackConfig:
    """One attack setting. ``eps`` in pixel units; ``stop_below`` on the task's score scale; ``precision`` the
    resolved search dtype of the ground-truth runs (``bf16`` on CUDA by default, where RobustVLM casts LLaVA to
    float16; ``fp32`` on a CPU); the final and targeted runs are always float32."""

    eps: float
    n_iter: int = 100
    protocol: str = "ensemble"
    max_references: int = 5
    targets: tuple[str, ...] = ()
    stop_below: float = 0.0
    batch_size: int = 64
    seed: int = 0
    max_new_tokens: int = 20
    precision: str = "fp32"
    generation: Generation | None = None  # how scored outputs are decoded; None: greedy, ``max_new_tokens``

    def decoding(self) -> Generation:
        return self.generation or Generation(max_new_tokens=self.max_new_tokens)

    def describe(self) -> dict:
        described = {"protocol": self.protocol, "iterations": self.n_iter, "max_references": self.max_references,
                     "targets": list(self.targets), "stop_below": self.stop_below, "seed": self.seed,
                     "start": "clean", "initial_step": VLM_INITIAL_STEP,
                     "final_fp32_from_best": self.protocol == "ensemble"}
        if self.precision != "fp32":  # float32 settings keep the ids they had before the option existed
            described["precision"] = self.precision
        return described


@dataclass
class VLMAttackOutcome:
    """Per sample: the worst-case adversarial image, its text and score, the run that found it, ℓ∞ norm, and
    the gradient evaluations it cost (forward and backward passes through the VLM, every run together)."""

    x_adv: torch.Tensor
    texts: list[str]
    scores: list[float]
    fooled_by: list[str]
    norms: torch.Tensor
    grad_evals: torch.Tensor | None = None


def attack_texts(references: Sequence[str], max_references: int, distinct_by_frequency: bool) -> list[str]:
    """The ground-truth texts to attack with: the first ``max_references`` (captions), or the most frequent
    distinct ones (VQA human answers; ties keep their first appearance)."""
    if distinct_by_frequency:
        counts = Counter(references)
        order = sorted(counts, key=lambda a: (-counts[a], references.index(a)))
        return order[:max_references]
    return list(references[:max_references])


def stops(score: float, stop_below: float) -> bool:
    """Whether the ensemble stops attacking a sample with this score: below the threshold, or at 0."""
    return score < stop_below or score <= 0.0


def vlm_apgd(eps: float, n_iter: int, batch_size: int, seed: int) -> APGD:
    """RobustVLM's APGD for VLMs: from the clean image (or a given start), first step 1·eps, every iteration
    run (the objective decides whether a success may stop a sample early)."""
    return APGD(eps, n_iter=n_iter, batch_size=batch_size, seed=seed, initial_step=VLM_INITIAL_STEP,
                random_start=False)


def _generate(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str], batch: int,
              generation: Generation) -> list[str]:
    """The task's decoding; called outside the search's autocast, so in float32: what is scored and reported."""
    out: list[str] = []
    for s in range(0, len(x), batch):
        out += vlm.generate_with(x[s:s + batch], list(prompts[s:s + batch]), generation)
    return out


def planned_runs(config: VLMAttackConfig) -> list[str]:
    """The names of the APGD runs of ``config``'s protocol, in the order they run (as ``fooled_by`` names them)."""
    if config.protocol == "single":
        return ["apgd-gt1"]
    return ([f"apgd-gt{j + 1}" for j in range(config.max_references)] + ["apgd-fp32-final"]
            + [f"apgd-target:{t}" for t in config.targets])


def attack_vlm(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str],
               ground_truth: Sequence[Sequence[str]], score: ScoreFn, clean_texts: Sequence[str],
               clean_scores: Sequence[float], config: VLMAttackConfig,
               on_run_done: Callable[[str], None] | None = None,
               on_progress: Callable[[str, int, float], None] | None = None,
               batch: AdaptiveBatch | None = None) -> VLMAttackOutcome:
    """Run the protocol of ``config`` on images ``x`` (N, 3, H, W) in [0,1].

    ``ground_truth[i]`` are the texts to attack sample i with (see :func:`attack_texts`); ``score(indices,
    texts)`` gives the task score of generated texts; ``clean_texts``/``clean_scores`` the clean outcome.
    Each run (:func:`planned_runs`) attacks its samples ``config.batch_size`` at a time (each sample's outcome
    does not depend on its batch mates); ``on_progress(run, k, mean score)`` follows every batch and the
    samples a run skips (k of them), so each run counts N; ``on_run_done(run)`` follows each run that attacked.
    ``batch`` (default: a new one of ``config.batch_size``) halves the batch of the run that runs out of memory
    and keeps the smaller size (:mod:`simclip_bench.memory.adaptive_batch`); outcomes do not change.
    """
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}; choose one of {PROTOCOLS}")
    n = len(x)
    device = x.device
    best_x = x.clone()
    best_text, best_score = list(clean_texts), list(clean_scores)
    fooled_by = [""] * n
    best_source: list[str | None] = [None] * n  # the ground-truth text whose run found the best point
    counts = torch.zeros(n, dtype=torch.float64, device=device)
    batch = batch or AdaptiveBatch(config.batch_size, "VLM attack batch")

    def run_once(name: str, texts: list[str | None], targeted: bool, start: torch.Tensor | None,
                 precision: str) -> None:
        active = [i for i in range(n) if texts[i] is not None and not stops(best_score[i], config.stop_below)]
        if on_progress and len(active) < n:
            on_progress(name, n - len(active), statistics.fmean(best_score))
        if not active:
            return
        attack_progress.run(name, len(active))
        objective = CountedObjective(LanguageModelObjective(vlm, prompts, [t or "" for t in texts], targeted=targeted),
                                     counts)

        def attempt(part: list[int]) -> None:
            idx = torch.tensor(part, device=device)
            spent = counts[idx].clone()  # a batch that runs out of memory is redone: its counts with it
            try:
                with autocast_for(precision, device):
                    result = vlm_apgd(config.eps, config.n_iter, len(part), config.seed).run(
                        objective, x[idx], idx, start=None if start is None else start[idx])
                check_perturbation(result.x_adv, x[idx], config.eps)
                texts_adv = _generate(vlm, result.x_adv, [prompts[i] for i in part], len(part),
                                      config.decoding())
            except BaseException:
                counts[idx] = spent
                raise
            for k, (i, s) in enumerate(zip(part, score(part, texts_adv), strict=True)):
                if s < best_score[i]:
                    best_score[i], best_text[i], fooled_by[i] = s, texts_adv[k], name
                    best_x[i] = result.x_adv[k]
                    if not targeted:
                        best_source[i] = texts[i]
            if on_progress:
                on_progress(name, len(part), statistics.fmean(best_score))

        batch.map_chunks(len(active), lambda part: attempt(active[part]))
        if on_run_done:
            on_run_done(name)

    runs = iter(planned_runs(config))
    attack_progress.plan([(name, config.n_iter) for name in planned_runs(config)])
    n_gt = 1 if config.protocol == "single" else config.max_references
    for j in range(n_gt):
        run_once(next(runs), [g[j] if j < len(g) else None for g in ground_truth], False, None, config.precision)
    if config.protocol == "ensemble":
        # Float32, from the best point so far, on the text whose run found it.
        texts = [best_source[i] or (ground_truth[i][0] if ground_truth[i] else None) for i in range(n)]
        run_once(next(runs), texts, False, best_x.clone(), "fp32")
        for target in config.targets:
            run_once(next(runs), [target] * n, True, None, "fp32")
    attack_progress.finished()
    norms = check_perturbation(best_x, x, config.eps)
    return VLMAttackOutcome(x_adv=best_x, texts=best_text, scores=best_score, fooled_by=fooled_by, norms=norms,
                            grad_evals=counts.cpu())


def targeted_string_attack(vlm: VisionLanguageModel, x: torch.Tensor, prompts: Sequence[str], target: str,
                           eps: float, n_iter: int = TARGETED_STRING_ITERATIONS, batch_size: int = 64, seed: int = 0,
                           max_new_tokens: int = 20, precision: str = "fp32",
                           batch: AdaptiveBatch | None = None) -> tuple[torch.Tensor, list[str], list[bool]]:
    """RobustVLM's targeted attack towards ``target`` (module docstring); returns adversarial images, their
    float32 generated texts and success (target in the text). Defaults: 10 000 iterations in float32. ``batch``
    (default: a new one of ``batch_size``) halves a batch that runs out of memory."""
    batch = batch or AdaptiveBatch(batch_size, "VLM attack batch")
    idx = torch.arange(len(x), device=x.device)
    objective = TargetStringObjective(vlm, prompts, [target] * len(x), max_new_tokens=max_new_tokens)

    def attack(size: int):
        with autocast_for(precision, x.device):
            return vlm_apgd(eps, n_iter, size, seed).run(objective, x, idx)

    result = batch.run(attack)
    check_perturbation(result.x_adv, x, eps)
    texts = [t for part in batch.map_chunks(len(x), lambda p: _generate(vlm, result.x_adv[p], prompts[p], len(x),
                                                                         Generation(max_new_tokens=max_new_tokens)))
             for t in part]
    return result.x_adv, texts, [contains_target(t, target) for t in texts]
