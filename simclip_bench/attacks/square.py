"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020), l-inf and l2.

A score-based black-box attack: it only reads the objective's loss and success flag, never a
gradient, so gradient masking (quantised inputs, non-differentiable preprocessing, shattered
gradients) does not blunt it. It is a random search: each iteration proposes a change confined to
one random square window and keeps it only when the loss improves (or the sample is fooled).

Defaults follow the paper and AutoAttack's implementation (fra31/auto-attack):

* ``n_queries = 5000`` per sample, the initialisation counting as the first; one restart;
* ``p_init = 0.8``, the fraction of pixels a square covers, halved after iterations 10, 50, 200,
  500, 1000, 2000, 4000, 6000 and 8000 and never rescaled to ``n_queries`` (AutoAttack's
  ``resc_schedule=False``); the side is ``round(sqrt(p * C*H*W / C))``;
* l-inf: vertical-stripes initialisation (one random sign per channel and column); a proposal sets
  its window to ``x +/- eps`` with a fresh random sign per channel; side clamped to [1, H-1];
* l2: a grid of signed "double concentric rectangle" blocks as initialisation; a proposal moves the
  perturbation mass of a second random window into the first, keeping the total norm at eps; the
  side is odd, at least 3 and at most H.

Unlike AutoAttack, a window may start at any of the ``H - side + 1`` positions (the paper's range;
AutoAttack's squares never reach the last row and column), and each sample draws its own window
and signs (AutoAttack shares one window, and for l-inf one set of signs, across the batch).

``eps`` is in [0,1] pixel units, like the images. All randomness comes from
:mod:`simclip_bench.attacks.rng` (stream 0 for the initialisation, stream ``1 + i`` for iteration
``i``), so a sample's trajectory depends only on its image, its seed and the objective: never on
its batch mates or on the batch size. Fooled samples leave the working batch and cost nothing.

**Success is decided in float32.** The search may run under bf16 autocast (the ensemble's search
precision); a sample stops only when the objective's float32 ``judge`` says FOOLED
(:mod:`simclip_bench.attacks.base`), as in APGD. A flagged proposal that float32 does not confirm is
treated as any other proposal (kept only if its loss is higher); a BORDERLINE one is kept in reserve and
returned as the success only if no clearer one is found within the query budget.
"""
from __future__ import annotations

import math

import torch

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.base import BORDERLINE, FOOLED, NORMS, AttackObjective, AttackResult, Norm, judge_of
from simclip_bench.attacks.rng import sample_uniform

P_INIT = 0.8
N_QUERIES = 5000
# After each of these (0-based) iterations p is halved once more; tuned for 10,000 queries, kept as is for fewer.
P_HALVING_AFTER = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
INIT_STREAM = 0


def p_schedule(iteration: int, p_init: float = P_INIT) -> float:
    """Fraction of the image a square covers at 0-based ``iteration``: ``p_init`` halved per threshold passed."""
    return p_init / 2 ** sum(iteration > t for t in P_HALVING_AFTER)


def square_side(p: float, shape: tuple[int, int, int], norm: Norm = "linf") -> int:
    """Side of the square window for coverage ``p`` on images of ``shape`` (C, H, W)."""
    _, h, w = shape
    side = int(round(math.sqrt(p * h * w)))  # the paper's sqrt(p * n_features / C)
    if norm == "linf":
        # Capped at H - 1 as in the authors' code: the window never covers the whole image.
        return max(min(side, min(h, w) - 1), 1)
    # The l2 block needs a centre pixel and both halves non-empty: odd and at least 3.
    side = max(side, 3)
    side += 1 - side % 2
    return min(side, min(h, w))


def _signs(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(dtype)


def _offsets(u: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Window start per sample, uniform over all ``size - side + 1`` positions, as in the paper.

    AutoAttack draws from ``size - side`` positions, so its squares never reach the last row and column.
    """
    n = size - side + 1
    return (u * n).long().clamp_(0, n - 1)


def _window_mask(top: torch.Tensor, left: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) bool: True inside each sample's ``side`` x ``side`` window."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=left.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _channel_norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).norm(dim=2)[:, :, None, None]


def _sample_norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)[:, None, None, None]


# ----------------------------------------------------------------------------------------- l-inf


def _linf_init(x: torch.Tensor, eps: float, seeds: torch.Tensor) -> torch.Tensor:
    """Vertical stripes: each (channel, column) of the image moves by +eps or -eps as a whole."""
    c, _, w = x.shape[1:]
    signs = _signs(sample_uniform(seeds, INIT_STREAM, (c, 1, w), x.device, torch.float64), x.dtype)
    return torch.clamp(x + eps * signs, 0.0, 1.0)


def _linf_proposal(x: torch.Tensor, x_best: torch.Tensor, eps: float, seeds: torch.Tensor, stream: int,
                   side: int) -> torch.Tensor:
    """``x_best`` with one window reset to a random vertex of the ball: ``x +/- eps`` per channel."""
    b, c, h, w = x.shape
    u = sample_uniform(seeds, stream, (2 + c,), x.device, torch.float64)
    window = _window_mask(_offsets(u[:, 0], side, h), _offsets(u[:, 1], side, w), side, h, w)
    signs = _signs(u[:, 2:], x.dtype).view(b, c, 1, 1)
    # Setting the window directly (instead of adding 2*eps and projecting) keeps it exactly on the ball.
    return torch.where(window, torch.clamp(x + eps * signs, 0.0, 1.0), x_best)


# -------------------------------------------------------------------------------------------- l2


def _rectangles(rows: int, cols: int) -> torch.Tensor:
    """Concentric rectangles around the centre cell; ring k (Chebyshev distance k) weighs
    sum_{j >= k} 1/(j+1)^2, so the mass peaks in the middle. Unit l2 norm."""
    n_rings = max(rows // 2, cols // 2) + 1
    ring = torch.maximum((torch.arange(rows) - rows // 2).abs()[:, None],
                         (torch.arange(cols) - cols // 2).abs()[None, :])
    per_ring = 1.0 / torch.arange(1, n_rings + 1, dtype=torch.float64) ** 2
    weight = per_ring.flip(0).cumsum(0).flip(0)[ring]
    return weight / weight.norm().clamp_min(1e-12)


def _l2_block(side: int) -> torch.Tensor:
    """The l2 building block: a positive upper and a negative lower half of rectangles, unit norm (side, side)."""
    top = side // 2
    block = torch.cat([_rectangles(top, side), -_rectangles(side - top, side)])
    return block / block.norm()


def _oriented_blocks(side: int, transpose: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, side, side) blocks, transposed where ``transpose`` (B,) is True, so the halves split either way."""
    block = _l2_block(side).to(device=transpose.device, dtype=dtype)
    return torch.where(transpose[:, None, None], block.T, block)


def _place(blocks: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) zeros with each sample's (side, side) block written at (top, left)."""
    b, side = blocks.shape[:2]
    span = torch.arange(side, device=blocks.device)
    canvas = blocks.new_zeros(b, h, w)
    rows = (top[:, None] + span)[:, :, None]
    cols = (left[:, None] + span)[:, None, :]
    canvas[torch.arange(b, device=blocks.device)[:, None, None], rows, cols] = blocks
    return canvas[:, None]


def _grid(size: int, side: int) -> list[int]:
    """Tile starts along one axis, as in the reference: ``size // side`` tiles from the offset that would centre
    five of them; a tile starting past the edge is dropped, one reaching past it is cropped."""
    start = max((size - 5 * side) // 2, 0)
    return [t for t in range(start, start + side * (size // side), side) if t < size]


def _l2_init(x: torch.Tensor, eps: float, seeds: torch.Tensor) -> torch.Tensor:
    """A grid of l2 blocks, each with a random orientation and a random sign per channel, scaled to norm eps."""
    _, c, h, w = x.shape
    side = max(min(h, w) // 5, 1)
    tiles = [(t, lft) for t in _grid(h, side) for lft in _grid(w, side)]
    u = sample_uniform(seeds, INIT_STREAM, (len(tiles), 1 + c), x.device, torch.float64)
    delta = torch.zeros_like(x)
    for k, (t, lft) in enumerate(tiles):
        blocks = _oriented_blocks(side, u[:, k, 0] < 0.5, x.dtype)
        signs = _signs(u[:, k, 1:], x.dtype)[:, :, None, None]
        crop = blocks[:, None, : h - t, : w - lft]
        delta[:, :, t:t + side, lft:lft + side] += crop * signs
    return torch.clamp(x + eps * delta / (_sample_norms(delta) + 1e-12), 0.0, 1.0)


def _l2_proposal(x: torch.Tensor, x_best: torch.Tensor, eps: float, seeds: torch.Tensor, stream: int,
                 side: int) -> torch.Tensor:
    """Move the perturbation of a random ``old`` window into a random ``new`` one, where a fresh signed block
    is added to what was there; per channel, the new window gets the norm both windows had plus an equal
    share of whatever the image's norm falls short of eps. The result is rescaled to norm eps."""
    b, c, h, w = x.shape
    u = sample_uniform(seeds, stream, (5 + c,), x.device, torch.float64)
    top, left = _offsets(u[:, 0], side, h), _offsets(u[:, 1], side, w)
    new = _window_mask(top, left, side, h, w)
    old = _window_mask(_offsets(u[:, 2], side, h), _offsets(u[:, 3], side, w), side, h, w)
    delta = x_best - x
    budget_sq = (eps**2 - _sample_norms(delta) ** 2).clamp_min(0.0) / c + _channel_norms(delta * (new | old)) ** 2
    in_new = delta * new
    direction = (_place(_oriented_blocks(side, u[:, 4] < 0.5, x.dtype), top, left, h, w)
                 * _signs(u[:, 5:], x.dtype)[:, :, None, None]
                 + in_new / (_channel_norms(in_new) + 1e-12))
    direction = direction / (_channel_norms(direction) + 1e-12) * budget_sq.sqrt()
    delta = torch.where(new, direction, torch.where(old, 0.0, delta))
    return torch.clamp(x + eps * delta / (_sample_norms(delta) + 1e-12), 0.0, 1.0)


# ---------------------------------------------------------------------------------------- driver


_INIT = {"linf": _linf_init, "l2": _l2_init}
_PROPOSAL = {"linf": _linf_proposal, "l2": _l2_proposal}


def _check_args(x: torch.Tensor, idx: torch.Tensor, eps: float, seeds: torch.Tensor, norm: str,
                n_queries: int, p_init: float) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    if x.ndim != 4:
        raise ValueError(f"Square needs images (B, C, H, W), got shape {tuple(x.shape)}")
    if idx.shape != x.shape[:1] or seeds.shape != x.shape[:1]:
        raise ValueError("idx and seeds need one entry per image")
    if eps < 0 or n_queries < 1 or not 0 < p_init <= 1:
        raise ValueError(f"need eps >= 0, n_queries >= 1 and 0 < p_init <= 1; got {eps}, {n_queries}, {p_init}")


@torch.no_grad()
def square_attack(objective: AttackObjective, x: torch.Tensor, idx: torch.Tensor, eps: float,
                  seeds: torch.Tensor, norm: Norm = "linf", n_queries: int = N_QUERIES,
                  p_init: float = P_INIT) -> AttackResult:
    """Square Attack (Andriushchenko et al., ECCV 2020): black-box random search, forward passes only.

    Args:
        objective: ``objective(x_adv, idx) -> (loss to maximise, success)``; for a classifier use
            ``ClassifierObjective(model, labels, loss="margin")``, the paper's loss.
        x: clean images (B, C, H, W) in [0,1].
        idx: global sample indices (B,) int64, passed through to the objective.
        eps: radius of the ``norm`` ball, in [0,1] pixel units (e.g. 4/255).
        seeds: per-sample seeds (B,) int64, e.g. ``rng.sample_seeds(seed, idx)``; they alone fix
            a sample's random proposals.
        norm: ``"linf"`` (default) or ``"l2"``.
        n_queries: objective evaluations per sample, the initialisation included (default 5000).
        p_init: initial fraction of the image a square covers (default 0.8).

    Returns:
        ``AttackResult``: per sample, the first point where the objective's success was confirmed
        (float32 FOOLED, for an objective that judges), else a BORDERLINE point if one was seen, else the
        point of highest loss; ``success`` and ``pred`` at that point; ``loss`` the best loss seen.
    """
    _check_args(x, idx, eps, seeds, norm, n_queries, p_init)
    x = x.detach()
    if x.shape[0] == 0:
        return AttackResult(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), x.new_zeros(0))
    seeds = seeds.to(x.device)
    verdicts = _Verdicts(objective, x)
    x_best = _INIT[norm](x, eps, seeds)
    best_loss, flagged = objective(x_best, idx)
    best_loss = best_loss.detach().clone()
    success = verdicts.judge(x_best, idx, torch.arange(len(x), device=x.device), flagged.detach().bool())
    attack_progress.stream(len(x), iterations=n_queries)
    for it in range(n_queries - 1):
        active = (~success).nonzero().squeeze(1)
        attack_progress.advanced(1, active.numel())  # nonzero() has synchronised already
        if active.numel() == 0:
            break
        side = square_side(p_schedule(it, p_init), tuple(x.shape[1:]), norm)
        x_new = _PROPOSAL[norm](x[active], x_best[active], eps, seeds[active], INIT_STREAM + 1 + it, side)
        loss, flagged = objective(x_new, idx[active.to(idx.device)])
        fooled = verdicts.judge(x_new, idx[active.to(idx.device)], active, flagged.detach().bool())
        # A fooling proposal is kept even if its loss is lower: success is what the caller asked for.
        keep = (loss > best_loss[active]) | fooled
        x_best[active] = torch.where(keep[:, None, None, None], x_new, x_best[active])
        best_loss[active] = torch.maximum(loss, best_loss[active])
        success[active] = fooled
    return verdicts.result(x_best, success, best_loss)


class _Verdicts:
    """Square's successes, judged in float32 when the objective can (:func:`~simclip_bench.attacks.base.judge_of`):
    per sample the confirmed flag and prediction, and a BORDERLINE point kept in reserve."""

    def __init__(self, objective: AttackObjective, x: torch.Tensor) -> None:
        self.judge_fn = judge_of(objective)
        n = len(x)
        self.pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
        self.weak = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.x_weak = x.clone()
        self.pred_weak = self.pred.clone()
        self.unconfirmed = 0

    def judge(self, x_new: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, flagged: torch.Tensor) -> torch.Tensor:
        """Which of ``x_new`` (the samples at positions ``rows``) are FOOLED in float32, of those ``flagged``."""
        if self.judge_fn is None:
            return flagged
        fooled = torch.zeros_like(flagged)
        asked = flagged.nonzero().squeeze(1)
        if asked.numel() == 0:
            return fooled
        codes, preds = self.judge_fn(x_new[asked], idx[asked.to(idx.device)])
        preds = torch.full((len(asked),), -1, dtype=torch.long, device=x_new.device) if preds is None else preds
        yes = codes == FOOLED
        fooled[asked[yes]] = True
        self.pred[rows[asked[yes]]] = preds[yes]
        self.unconfirmed += int((~yes).sum())
        reserve = (codes == BORDERLINE) & ~self.weak[rows[asked]]
        where = rows[asked[reserve]]
        self.x_weak[where], self.pred_weak[where], self.weak[where] = x_new[asked[reserve]], preds[reserve], True
        return fooled

    def result(self, x_best: torch.Tensor, success: torch.Tensor, best_loss: torch.Tensor) -> AttackResult:
        weak = ~success & self.weak  # no clearer success within the budget: the borderline point counts
        x_out = torch.where(weak[:, None, None, None], self.x_weak, x_best)
        pred = torch.where(success, self.pred, torch.where(weak, self.pred_weak, -1))
        return AttackResult(x_out, success | weak, best_loss, unconfirmed=self.unconfirmed, pred=pred,
                            borderline=int(weak.sum()))
