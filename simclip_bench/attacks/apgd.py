"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020), l-inf and l2, any loss.

Defaults are the paper's and the reference implementation's (fra31/auto-attack, ``APGDAttack``):

* 100 iterations, 1 restart, random start on the ball's surface (``random_start``; RobustVLM's
  captioning/VQA attack starts at the clean image or a given ``start`` instead);
* initial step size ``initial_step``·eps = 2·eps (RobustVLM's VLM attack: 1·eps), halved at the
  checkpoints when the loss oscillates (at most rho = 0.75 of the steps since the last checkpoint
  increased it) or when neither the step was reduced nor the best loss improved since the last
  checkpoint; after a halving the iterate restarts from the best point found;
* checkpoints after 22 % of the iterations, then at intervals shrinking by 3 % down to 6 %;
* momentum 0.75 (the first step has none).

With the same start point and ``stop_on_success=False`` the trajectory is the reference's
``attack_single_run``, step for step (a test compares them).

How it runs: a *stream*. A working batch of ``batch_size`` slots holds samples at different
iterations, each with its own counters and checkpoints. Every ``refill_every`` iterations the
slots whose sample is done (fooled, or out of iterations) hand in their result and take the next
samples from the queue. Fooled samples therefore stop costing compute, the batch stays full, and
on CUDA the host synchronises once per ``refill_every`` = 10 iterations, not per iteration. On a
CPU a synchronisation costs nothing, so the batch is refilled after every iteration and a fooled
sample costs no further gradient evaluation. A sample's trajectory (and so its outcome) depends
only on its own image, seed and objective, never on its batch mates or on ``refill_every`` (up to
the float rounding of differently sized batches).

**Success is confirmed before a sample leaves.** Under bf16 autocast the search's success flag can
be wrong at the decision boundary (bf16 logits have a resolution of 0.25 at values of 32-64), both
ways; a classifier objective therefore flags every iterate within bf16's rounding of the boundary
(:mod:`simclip_bench.attacks.base`). A flagged sample pauses (its iteration counter does not advance);
at the next refill the objective's ``judge`` (exact float32) decides on its point. A FOOLED sample
leaves with that point and that verdict; any other resumes its trajectory where it paused, as the
reference, which never stops early, would have gone on; a BORDERLINE point (fooled by less than the
float32 tolerance) is kept and returned as the success only if the sample never gets a clearer one. So a
reduced-precision search never stops on, nor counts, a success float32 does not confirm, and loses none
that float32 would see.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.base import (
    BORDERLINE,
    FOOLED,
    AttackObjective,
    AttackResult,
    Norm,
    judge_of,
    loss_and_grad,
    normalized_step,
    project,
    random_start,
)
from simclip_bench.attacks.rng import sample_seeds

MOMENTUM = 0.75
RHO = 0.75


def checkpoint_schedule(n_iter: int) -> list[tuple[int, int]]:
    """(iteration, interval) pairs: after which 0-based iterations the step-size conditions are checked."""
    k, k_min, decrease = _schedule_constants(n_iter)
    checks, counter = [], 0
    for i in range(n_iter):
        counter += 1
        if counter == k:
            checks.append((i, k))
            k = max(k - decrease, k_min)
            counter = 0
    return checks


def _schedule_constants(n_iter: int) -> tuple[int, int, int]:
    return max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)


def _v(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


@dataclass
class _Slots:
    """The working batch: one row per slot; ``sample`` is the position of its sample in the input."""

    sample: torch.Tensor
    x: torch.Tensor
    x_adv: torch.Tensor
    x_prev: torch.Tensor
    grad: torch.Tensor
    x_best: torch.Tensor
    grad_best: torch.Tensor
    loss_best: torch.Tensor
    loss_best_last_check: torch.Tensor
    reduced_last_check: torch.Tensor
    found: torch.Tensor
    confirmed: torch.Tensor
    x_found: torch.Tensor
    pred_found: torch.Tensor  # float32 prediction at x_found, once confirmed
    weak: torch.Tensor  # a BORDERLINE point was seen: x_weak, with its prediction pred_weak
    x_weak: torch.Tensor
    pred_weak: torch.Tensor
    step: torch.Tensor
    it: torch.Tensor
    counter: torch.Tensor
    k: torch.Tensor
    loss_steps: torch.Tensor  # (n_iter, slots)

    def select(self, keep: torch.Tensor) -> _Slots:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out = {name: (v[:, keep] if name == "loss_steps" else v[keep]) for name, v in fields.items()}
        return _Slots(**out)

    @staticmethod
    def concat(a: _Slots, b: _Slots) -> _Slots:
        out = {}
        for name in a.__dataclass_fields__:
            va, vb = getattr(a, name), getattr(b, name)
            out[name] = torch.cat([va, vb], dim=1 if name == "loss_steps" else 0)
        return _Slots(**out)


class APGD:
    """APGD over a set of samples, with a refilled working batch (see module docstring).

    Args:
        eps: radius in pixel units (e.g. 4/255 for l-inf, 0.5 for l2).
        norm: ``linf`` (default) or ``l2``.
        n_iter: iterations per restart (default 100).
        n_restarts: random restarts; a restart runs only on samples not yet fooled (default 1).
        batch_size: working-batch slots (default 500).
        refill_every: iterations between refills, i.e. between host synchronisations (default: 10 on
            CUDA, 1 on a CPU, where synchronising is free).
        seed: run seed; sample i's randomness is a function of (seed, i, restart) only.
        initial_step: first step size in units of eps (default 2.0, AutoAttack; RobustVLM's VLM attack 1.0).
        random_start: start on the ball's surface at random (default True); False starts at the clean image.
        stop_on_success: a sample leaves once its success is confirmed (default True); False runs every
            iteration, as the reference does, and keeps the last confirmed fooled point.
    """

    def __init__(self, eps: float, norm: Norm = "linf", n_iter: int = 100, n_restarts: int = 1,
                 batch_size: int = 500, refill_every: int | None = None, seed: int = 0, initial_step: float = 2.0,
                 random_start: bool = True, stop_on_success: bool = True) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"APGD supports linf and l2, not {norm!r}")
        self.eps, self.norm, self.n_iter, self.n_restarts = eps, norm, n_iter, n_restarts
        self.batch_size, self.refill_every, self.seed = batch_size, refill_every, seed
        self.initial_step, self.random_start, self.stop_on_success = initial_step, random_start, stop_on_success
        self.k0, self.k_min, self.k_decrease = _schedule_constants(n_iter)

    def run(self, objective: AttackObjective, x: torch.Tensor, idx: torch.Tensor,
            seed_ids: torch.Tensor | None = None, start: torch.Tensor | None = None) -> AttackResult:
        """Attack images ``x`` (N, C, H, W) in [0,1], the samples ``idx`` (N,) of ``objective``.

        ``seed_ids`` (N,) are the samples' stable identities for the per-sample randomness (default
        ``idx``); pass dataset indices so that a sample's outcome does not depend on how a run was cut.
        ``start`` (N, C, H, W): the first iterate of every sample (clipped to [0,1]; it should lie in the
        ball), instead of the random or clean start; restarts after the first start at random.
        """
        seed_ids = idx if seed_ids is None else seed_ids
        x = x.detach()
        out_x, out_best = x.clone(), x.clone()
        out_success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        out_loss = torch.full((len(x),), float("-inf"), device=x.device)
        out_pred = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        unconfirmed = borderline = 0
        for restart in range(self.n_restarts):
            todo = torch.nonzero(~out_success).flatten()
            if len(todo) == 0:
                break
            # seed_ids may live on the CPU (the ensemble's keys) and sample_seeds returns CPU seeds, while
            # todo and the stream's positions live on x's device: a CPU tensor indexed by CUDA indices raises.
            seeds = sample_seeds(self.seed, seed_ids[todo.to(seed_ids.device)], salt=restart).to(x.device)
            attack_progress.stream(len(todo), restart, self.n_restarts, self.n_iter)
            first = start[todo].detach() if start is not None and restart == 0 else None
            r = self._run_stream(objective, x[todo], idx[todo], seeds, first)
            unconfirmed += r.unconfirmed
            borderline += r.borderline
            higher = r.loss > out_loss[todo]
            out_best[todo[higher]] = r.x_best[higher]
            better = r.success | (~out_success[todo] & higher)
            take = todo[better]
            out_x[take], out_loss[take], out_pred[take] = r.x_adv[better], r.loss[better], r.pred[better]
            out_success[todo] |= r.success
        return AttackResult(x_adv=out_x, success=out_success, loss=out_loss, x_best=out_best,
                            unconfirmed=unconfirmed, pred=out_pred, borderline=borderline)

    def _enter(self, objective: AttackObjective, x: torch.Tensor, idx: torch.Tensor, seeds: torch.Tensor,
               positions: torch.Tensor, start: torch.Tensor | None) -> _Slots:
        xs = x[positions]
        if start is not None:
            x_adv = start[positions].clamp(0.0, 1.0)
        elif self.random_start:
            x_adv = random_start(xs, self.eps, self.norm, seeds[positions])
        else:
            x_adv = xs.clone()
        loss, success, grad = loss_and_grad(objective, x_adv, idx[positions])
        n = len(positions)
        zeros = torch.zeros(n, dtype=torch.long, device=x.device)
        return _Slots(
            sample=positions, x=xs, x_adv=x_adv, x_prev=x_adv.clone(), grad=grad, x_best=x_adv.clone(),
            grad_best=grad.clone(), loss_best=loss.clone(), loss_best_last_check=loss.clone(),
            reduced_last_check=torch.ones(n, dtype=torch.bool, device=x.device), found=success.clone(),
            confirmed=torch.zeros(n, dtype=torch.bool, device=x.device), x_found=x_adv.clone(),
            pred_found=torch.full((n,), -1, dtype=torch.long, device=x.device),
            weak=torch.zeros(n, dtype=torch.bool, device=x.device), x_weak=x_adv.clone(),
            pred_weak=torch.full((n,), -1, dtype=torch.long, device=x.device),
            step=torch.full((n,), self.initial_step * self.eps, device=x.device, dtype=x.dtype),
            it=zeros.clone(), counter=zeros.clone(), k=zeros + self.k0,
            loss_steps=torch.zeros((self.n_iter, n), device=x.device, dtype=loss.dtype))

    def _confirm(self, objective: AttackObjective, idx: torch.Tensor, s: _Slots) -> int:
        """Judge the points of newly flagged slots in float32 (:func:`~simclip_bench.attacks.base.judge_of`):
        a FOOLED slot is confirmed with its prediction; any other resumes, a BORDERLINE point kept in reserve
        (the first one). Returns how many flags were not confirmed. Without ``stop_on_success`` a slot is
        judged when it ends."""
        judge = judge_of(objective)
        pending = s.found & ~s.confirmed
        if not self.stop_on_success:
            pending &= s.it >= self.n_iter
        if judge is None:
            s.confirmed |= pending
            return 0
        rows = torch.nonzero(pending).flatten()
        if len(rows) == 0:
            return 0
        codes, preds = judge(s.x_found[rows], idx[s.sample[rows]])
        preds = torch.full((len(rows),), -1, dtype=torch.long, device=rows.device) if preds is None else preds
        fooled = codes == FOOLED
        s.confirmed[rows[fooled]] = True
        s.pred_found[rows[fooled]] = preds[fooled]
        reserve = (codes == BORDERLINE) & ~s.weak[rows]
        s.x_weak[rows[reserve]], s.pred_weak[rows[reserve]] = s.x_found[rows[reserve]], preds[reserve]
        s.weak[rows[reserve]] = True
        s.found[rows[~fooled]] = False
        return int((~fooled).sum())

    def _run_stream(self, objective: AttackObjective, x: torch.Tensor, idx: torch.Tensor,
                    seeds: torch.Tensor, start: torch.Tensor | None = None) -> AttackResult:
        n = len(x)
        res_x, res_best, res_loss = x.clone(), x.clone(), torch.empty(n, device=x.device)
        res_success = torch.zeros(n, dtype=torch.bool, device=x.device)
        res_pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
        borderline = torch.zeros((), dtype=torch.long, device=x.device)
        queue = torch.arange(n, device=x.device)
        head = min(self.batch_size, n)
        slots = self._enter(objective, x, idx, seeds, queue[:head], start)
        unconfirmed = self._confirm(objective, idx, slots)  # a start point may already be fooled
        offsets = torch.arange(self.k0, device=x.device)
        refill_every = self.refill_every or (1 if x.device.type == "cpu" else 10)
        while True:
            done = slots.it >= self.n_iter
            if self.stop_on_success:
                done |= slots.found
            if bool(done.any()) or head < n:
                fin = slots.select(done)
                weak = ~fin.found & fin.weak  # no clearer success: the borderline point counts
                res_x[fin.sample] = torch.where(_v(fin.found, fin.x), fin.x_found,
                                                torch.where(_v(weak, fin.x), fin.x_weak, fin.x_best))
                res_best[fin.sample] = fin.x_best
                res_success[fin.sample] = fin.found | weak
                res_pred[fin.sample] = torch.where(fin.found, fin.pred_found, torch.where(weak, fin.pred_weak, -1))
                res_loss[fin.sample] = fin.loss_best
                borderline += weak.sum()
                slots = slots.select(~done)
                free = min(self.batch_size - len(slots.sample), n - head)
                if free > 0:
                    entering = self._enter(objective, x, idx, seeds, queue[head:head + free], start)
                    unconfirmed += self._confirm(objective, idx, entering)
                    slots = _Slots.concat(slots, entering)
                    head += free
                    continue  # entering slots fooled at their start leave before costing an iteration
            if not len(slots.sample):
                break
            for _ in range(refill_every):
                self._iterate(objective, idx, slots, offsets)
            unconfirmed += self._confirm(objective, idx, slots)
            attack_progress.advanced(refill_every, len(slots.sample), n - head)  # shapes: no host sync
        return AttackResult(x_adv=res_x, success=res_success, loss=res_loss, x_best=res_best,
                            unconfirmed=unconfirmed, pred=res_pred, borderline=int(borderline))

    @torch.no_grad()
    def _iterate(self, objective: AttackObjective, idx: torch.Tensor, s: _Slots, offsets: torch.Tensor) -> None:
        """One APGD iteration for every slot still running; finished slots are left untouched."""
        active = s.it < self.n_iter
        if self.stop_on_success:
            active &= ~s.found  # a flagged slot pauses until its success is confirmed or rejected
        a = torch.where(s.it == 0, 1.0, MOMENTUM).to(s.x.dtype)
        z = project(s.x_adv + _v(s.step, s.x) * normalized_step(s.grad, self.norm), s.x, self.eps, self.norm)
        x_next = project(s.x_adv + _v(a, s.x) * (z - s.x_adv) + _v(1 - a, s.x) * (s.x_adv - s.x_prev),
                         s.x, self.eps, self.norm)
        s.x_prev = torch.where(_v(active, s.x), s.x_adv, s.x_prev)
        s.x_adv = torch.where(_v(active, s.x), x_next, s.x_adv)

        loss, success, grad = loss_and_grad(objective, s.x_adv, idx[s.sample])
        success &= active
        s.x_found = torch.where(_v(success, s.x), s.x_adv, s.x_found)
        s.found |= success
        s.confirmed &= ~success  # a new fooled point needs its own confirmation
        s.grad = torch.where(_v(active, s.x), grad, s.grad)
        row = s.it.clamp(max=self.n_iter - 1)
        cols = torch.arange(len(row), device=row.device)
        s.loss_steps[row, cols] = torch.where(active, loss, s.loss_steps[row, cols])
        better = active & (loss > s.loss_best)
        s.x_best = torch.where(_v(better, s.x), s.x_adv, s.x_best)
        s.grad_best = torch.where(_v(better, s.x), grad, s.grad_best)
        s.loss_best = torch.where(better, loss, s.loss_best)

        s.counter = s.counter + active.long()
        check = active & (s.counter == s.k)
        # Increases over the last k steps; like the reference, at the first checkpoint the oldest
        # comparison reads row -1 (the last, still zero, row of the history).
        rows = s.it[None, :] - offsets[:, None]
        ups = s.loss_steps.gather(0, rows % self.n_iter) > s.loss_steps.gather(0, (rows - 1) % self.n_iter)
        increases = (ups & (offsets[:, None] < s.k[None, :])).sum(dim=0)
        oscillating = increases <= s.k.to(loss.dtype) * RHO
        stalled = ~s.reduced_last_check & (s.loss_best_last_check >= s.loss_best)
        reduce = check & (oscillating | stalled)
        s.reduced_last_check = torch.where(check, reduce, s.reduced_last_check)
        s.loss_best_last_check = torch.where(check, s.loss_best, s.loss_best_last_check)
        s.step = torch.where(reduce, s.step / 2.0, s.step)
        s.x_adv = torch.where(_v(reduce, s.x), s.x_best, s.x_adv)
        s.grad = torch.where(_v(reduce, s.x), s.grad_best, s.grad)
        s.k = torch.where(check, (s.k - self.k_decrease).clamp(min=self.k_min), s.k)
        s.counter = torch.where(check, 0, s.counter)
        s.it = s.it + active.long()


def apgd_attack(objective: AttackObjective, x: torch.Tensor, eps: float, idx: torch.Tensor | None = None,
                norm: Norm = "linf", n_iter: int = 100, n_restarts: int = 1, batch_size: int = 500,
                seed: int = 0) -> AttackResult:
    """Convenience wrapper: APGD on ``x`` with sample indices ``idx`` (default ``arange(N)``)."""
    if idx is None:
        idx = torch.arange(len(x), device=x.device)
    return APGD(eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts, batch_size=batch_size,
                seed=seed).run(objective, x, idx)
