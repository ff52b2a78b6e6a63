"""Many workers against one store, on this machine: ``simclip eval`` with the model replaced by sleeps.

Everything but the model is the real code: ``run_eval`` and ``run_cell`` (zero-shot), the store
(``results/store.py``: appends under the lock, whole-file reads), the shards (``jobs/shards.py``) and the claims
(``jobs/claims.py``). What a GPU would do is a sleep of realistic, uneven duration (sleeping workers use no
CPU, so 64 of them fit on 2 cores):

* per sample and eps, ViT-L/14 at 224 px on an H100 under ``apgd-ce*5+apgd-t`` (RobustVLM's protocol, 100
  iterations): a robust image ``--robust-s`` (about 1 400 gradient evaluations at ~0.6 ms each), an image
  fooled on the way a uniform share of that up to ``--fooled-max``, a misclassified one only its clean pass;
  per dataset a seeded share of the images is misclassified (10-50 %) and of the rest robust (5-50 % at
  4/255, more at 2/255). Plus ``--batch-s`` per attack batch;
* per process the model load ``--load-s``; per cell the text classifier (``classes x templates x --prompt-ms``:
  ImageNet's 1 000 x 80 prompts 4 s) and the masking checks ``--checks-s``;
* one worker ``--slow`` times slower than the others (a throttled or shared GPU).

The grid is RobustVLM's zero-shot table for one model: its 13 datasets at 1 000 images and ImageNet at 5 000,
eps 2/255 and 4/255. ``--time-scale`` divides every sleep (not the real work) to make the run shorter; the real
overheads (lock, store reads, Python) are then that many times larger relative to the work than on GPUs.

Per worker count and balance (``static``: the interleave of ``--shard K/N``; ``dynamic``: chunks claimed from the
store) it prints the makespan against the ideal (all sleeps of the sample work spread over the workers in
proportion to their speed, no overhead: 1 / (N - 1 + 1/slow) of the one-worker work), and where each worker's
time went, averaged over workers: sample work, setup (model load, text classifiers, masking checks), waiting for
the store's lock, store reads (``read_samples`` and the scans of it: the resume set, the completeness check, the
cell's rows), the rest (Python, appends once locked), and idle (done before the last worker).

    python benchmarks/scale_simulation.py --workers 8 --workers 16 --workers 64
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

import simclip_bench.jobs.claims as claims_module
import simclip_bench.jobs.zeroshot_eval as job
import simclip_bench.results.store as store
import simclip_bench.tasks.zeroshot as cell
import simclip_bench.tasks.zeroshot_rows as rows_module
from simclip_bench.data.catalog import ROBUSTVLM_DATASETS
from simclip_bench.data.classification import ClassificationSource, ImageBatch
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval

# (classes, prompt templates) as CLIP_benchmark has them, roughly; the size of each test set
DATASETS: dict[str, tuple[int, int, int]] = {
    "cifar10": (10, 18, 10000), "cifar100": (100, 18, 10000), "stl10": (10, 18, 8000),
    "caltech101": (101, 34, 6085), "pets": (37, 1, 3669), "flowers": (102, 1, 6149), "dtd": (47, 8, 1880),
    "eurosat": (10, 3, 5400), "fgvc_aircraft": (100, 2, 3333), "cars": (196, 8, 8041), "pcam": (2, 1, 32768),
    "imagenet-r": (200, 18, 30000), "imagenet_sketch": (1000, 18, 50889), "imagenet1k": (1000, 80, 50000),
}
VOLATILE = ["run_id", "created_at", "seconds", "device", "git_sha"]  # git_sha: HEAD may move during a run


def _unit(*parts: object) -> float:
    """A seeded number in [0, 1) from ``parts``."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


class SimSource(ClassificationSource):
    """A dataset of the grid: its real class and template counts and size; images are 1-pixel placeholders."""

    def __init__(self, name: str) -> None:
        n_classes, n_templates, size = DATASETS[name]
        self.name, self._size = name, size
        self.classnames = [f"class {i}" for i in range(n_classes)]
        self.templates = [f"template {i} {{}}" for i in range(n_templates)]

    def __len__(self) -> int:
        return self._size

    def sample_id(self, index: int) -> str:
        return f"{index:07d}"

    def identity(self) -> dict:
        return {"kind": "simulated", "name": self.name, "size": self._size, "classes": len(self.classnames)}

    @property
    def source_text(self) -> str:
        return f"simulated:{self.name}"

    def label(self, index: int) -> int:
        return int(_unit(self.name, index, "label") * len(self.classnames))

    def load_readable(self, indices, image_size, transform) -> ImageBatch:
        indices = list(indices)
        return ImageBatch(torch.zeros(len(indices), 3, 1, 1), torch.tensor([self.label(i) for i in indices]),
                          list(range(len(indices))))


class Clock:
    """Wall and CPU seconds per category, for one worker."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def timing(self, category: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[category] += time.perf_counter() - w
            self.cpu[category] += time.process_time() - c
            self.count[category] += 1

    def timed(self, category: str, function):
        def wrapper(*args, **kwargs):
            with self.timing(category):
                return function(*args, **kwargs)
        return wrapper


def _sample_cost(args, dataset: str, index: int, eps: float | None) -> tuple[bool, bool, float]:
    """(clean correct, robust, seconds of GPU time) of one sample at one eps (None: clean)."""
    wrong = 0.1 + 0.4 * _unit(dataset, "wrong share")
    robust_share = (0.05 + 0.45 * _unit(dataset, "robust share")) * (1.5 if eps is not None and eps < 3 / 255 else 1)
    correct = _unit(dataset, index, "clean") >= wrong
    if eps is None:
        return correct, correct, args.clean_ms / 1000
    robust = correct and _unit(dataset, index, eps, "robust") < robust_share
    if not correct:
        return False, False, 0.0
    return True, robust, args.robust_s if robust else args.fooled_max * _unit(dataset, index, eps, "fooled")


def _install_sleeps(args, clock: Clock, slow: float) -> None:
    """Replace the model by sleeps in this (forked) worker, and time the store and the lock."""
    scale = slow / args.time_scale

    def nap(seconds: float, category: str) -> None:
        with clock.timing(category):
            time.sleep(seconds * scale)

    def load_model(spec, device, allow_unsafe_pickle=False):
        nap(args.load_s, "setup")
        visual = SimpleNamespace(preprocess_cfg={})
        return SimpleNamespace(model_id=spec, checkpoint_hash="simulated-" + "ab" * 27, text_hash="simulated",
                               model=SimpleNamespace(clip=SimpleNamespace(visual=visual), image_size=1, encoder=None))

    def build_text_classifier(model, classnames, templates):
        nap(len(classnames) * len(templates) * args.prompt_ms / 1000, "setup")

    def preflight_checks(head, x, y, batch_size=None):
        nap(args.checks_s, "setup")
        return []

    def outcomes(loaded, plan, head, settings, batch, chunk, chunk_ids, todo, run_id, device):
        rows, seconds = [], args.batch_s
        for setting, (spec, eps) in settings.items():
            positions = todo[setting]
            if not positions:
                continue
            results = [_sample_cost(args, plan.source.name, chunk[j], None if eps is None else eps.value)
                       for j in positions]
            seconds += sum(s for _, _, s in results)
            labels = batch.y[positions]
            clean = torch.tensor([lab if ok else (lab + 1) % len(plan.source.classnames)
                                  for lab, (ok, _, _) in zip(labels.tolist(), results, strict=True)])
            adv = torch.tensor([lab if rob else (lab + 1) % len(plan.source.classnames)
                                for lab, (_, rob, _) in zip(labels.tolist(), results, strict=True)])
            fooled = ["" if eps is None or rob or not ok else spec.name for ok, rob, _ in results]
            rows += rows_module.sample_rows(run_id, loaded, plan.source, spec.name, setting, plan.norm, eps,
                               [chunk_ids[j] for j in positions], labels, clean, clean if eps is None else adv,
                               torch.zeros(len(positions)), fooled, torch.zeros(len(positions)))
        nap(seconds, "work")
        return rows

    job.load_model = load_model
    job.open_source = lambda name, root, workers=0, seed=0: SimSource(name)
    cell.pixel_transform = lambda cfg: None
    cell.build_text_classifier = build_text_classifier
    cell.ZeroShotClassifier = lambda encoder, classifier: SimpleNamespace(eval=lambda: None)
    cell.preflight_checks = preflight_checks
    cell._outcomes = outcomes
    original_locked = store.locked

    @contextlib.contextmanager
    def timed_lock(out_dir):
        with clock.timing("lock wait"):
            context = original_locked(out_dir)
            context.__enter__()
        try:
            yield
        finally:
            context.__exit__(None, None, None)

    store.locked = timed_lock
    claims_module.locked = timed_lock
    for name in ("read_samples", "done_keys", "_complete", "cell_rows", "cell_chunks"):
        setattr(job, name, clock.timed("store reads", getattr(job, name)))


def _worker(k: int, n: int, balance: str, out: str, args, start: float, results) -> None:
    torch.set_num_threads(1)
    clock = Clock()
    slow = args.slow if k == 0 else 1.0
    _install_sleeps(args, clock, slow)
    while time.time() < start:
        time.sleep(0.001)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_eval(EvalRequest(models=["ViT-L-14 (simulated)"], datasets=["robustvlm", "imagenet"],
                                  protocol="robustvlm", batch_size=args.batch_size, out=Path(out), device="cpu",
                                  shard=f"{k}/{n}", balance=balance))
    results.put({"worker": k, "end": time.time() - start, "wall": time.perf_counter() - t0,
                 "cpu": time.process_time() - c0, "computed": result.computed, "slow": slow,
                 **{f"wall {c}": v for c, v in clock.wall.items()}, **{f"cpu {c}": v for c, v in clock.cpu.items()},
                 **{f"n {c}": v for c, v in clock.count.items()}})


def simulate(n: int, balance: str, args, root: Path) -> tuple[pd.DataFrame, Path]:
    out = root / f"{balance}-{n}"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 1.0 + 0.02 * n
    procs = [context.Process(target=_worker, args=(k, n, balance, str(out), args, start, results)) for k in range(n)]
    for p in procs:
        p.start()
    rows = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker failed ({p.exitcode})")
    return pd.DataFrame(rows).sort_values("worker").reset_index(drop=True), out


def sample_work(args) -> float:
    """Seconds of sample work at nominal speed (sleeps of the attack and clean passes, no batch overheads)."""
    from simclip_bench.data.subset import fixed_subset

    total = 0.0
    for name in (*ROBUSTVLM_DATASETS, "imagenet1k"):
        n = 5000 if name == "imagenet1k" else 1000
        for index in fixed_subset(DATASETS[name][2], n, 0):
            total += sum(_sample_cost(args, name, index, eps)[2] for eps in (None, 2 / 255, 4 / 255))
    return total / args.time_scale


def _table(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).drop(columns=VOLATILE)
    return frame.sort_values(["dataset", "setting"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, action="append", default=None)
    parser.add_argument("--balance", action="append", default=None, choices=["static", "dynamic"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--robust-s", type=float, default=0.85, help="GPU seconds of a robust image per eps")
    parser.add_argument("--fooled-max", type=float, default=0.2, help="at most this for an image fooled on the way")
    parser.add_argument("--clean-ms", type=float, default=0.5, help="clean pass per image")
    parser.add_argument("--batch-s", type=float, default=0.3, help="per attack batch")
    parser.add_argument("--load-s", type=float, default=20.0, help="model load per process")
    parser.add_argument("--prompt-ms", type=float, default=0.05, help="text tower per prompt")
    parser.add_argument("--checks-s", type=float, default=0.2, help="masking checks per cell")
    parser.add_argument("--slow", type=float, default=1.5, help="the slow worker's slowdown")
    parser.add_argument("--time-scale", type=float, default=1.0, help="divide every sleep by this")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores here")
    args = parser.parse_args()
    work = sample_work(args)
    print(f"{os.cpu_count()} CPUs; sample work {work:.0f} s at nominal speed (time scale {args.time_scale}); "
          f"batch {args.batch_size}; one worker {args.slow}x slower", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="scale-sim-"))
    print("| workers | balance | makespan s | ideal s | efficiency | samples/s | ideal samples/s | work | setup | "
          "lock wait | store reads | other | idle | store reads CPU s | max lock wait s | slow worker samples |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tables = {}
    for n in args.workers or [8, 16, 64]:
        for balance in args.balance or ["static", "dynamic"]:
            frame, out = simulate(n, balance, args, root)
            makespan = frame["end"].max()
            ideal = work / (n - 1 + 1 / args.slow)
            samples = 18000
            parts = {c: frame.get(f"wall {c}", pd.Series([0.0])).fillna(0).mean()
                     for c in ("work", "setup", "lock wait", "store reads")}
            parts["store reads"] -= 0  # the lock is never taken inside a read
            other = frame["wall"].mean() - sum(parts.values())
            idle = (makespan - frame["end"]).mean()
            share = {k: v / makespan for k, v in parts.items()}
            print(f"| {n} | {balance} | {makespan:.1f} | {ideal:.1f} | {ideal / makespan:.2f} | "
                  f"{samples / makespan:.1f} | {samples / ideal:.1f} | {share['work']:.1%} | {share['setup']:.1%} | "
                  f"{share['lock wait']:.1%} | {share['store reads']:.1%} | {other / makespan:.1%} | "
                  f"{idle / makespan:.1%} | {frame.get('cpu store reads', pd.Series([0.0])).mean():.2f} | "
                  f"{frame.get('wall lock wait', pd.Series([0.0])).max():.2f} | {int(frame.loc[0, 'computed'])} |",
                  flush=True)
            tables[(n, balance)] = _table(out)
            if args.keep is None:
                shutil.rmtree(out, ignore_errors=True)
    first = next(iter(tables.values()))
    same = all(t.equals(first) for t in tables.values())
    print(f"\nresults.csv identical across every worker count and balance: {'yes' if same else 'NO'}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
