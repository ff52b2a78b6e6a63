"""What ``simclip ls`` lists: every registry of the package, as rows of (name, description).

Each kind reads its registry where it lives, so a newly registered attack, objective, model or
suite shows up here with no change to this module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simclip_bench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class Listing:
    kind: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""
    details: tuple[str, ...] = ()


def _models() -> Listing:
    from simclip_bench.models.architectures import CATALOG_ARCHITECTURES, hf_export_status
    from simclip_bench.models.builtin import BUILTIN_MODELS
    from simclip_bench.models.known_checkpoints import KNOWN_CHECKPOINTS

    # The spec column holds what --model accepts; a vision-tower release (Sim-CLIP) shows its NAME=FILE form.
    known = list(KNOWN_CHECKPOINTS.values())
    rows = [(b.name, f"{b.arch} (built-in)", "", "", "shipped weights") for b in BUILTIN_MODELS.values()]
    rows += [(c.spec, c.base_spec or f"{c.arch} (from scratch)", c.objective, c.eps, c.cite) for c in known]
    details = tuple(f"{c.spec}: {c.paper}; weights {c.source}; reported under {c.reported_attack}"
                    + (f" ({c.note})" if c.note else "") for c in known)
    # Every architecture passes tests/test_catalog_contract.py (APGD, a training step, exports, masking checks).
    details += tuple(f"architecture {a.name}: open_clip {a.config}, {a.image_size} px; used by {a.used_by}; "
                     f"HF CLIPVisionModel export: {hf_export_status(a)}" + (f" ({a.note})" if a.note else "")
                     for a in CATALOG_ARCHITECTURES.values())
    note = ("Any open_clip ARCH:TAG (e.g. ViT-L-14:openai), hf-hub:org/repo, BASE=FILE (a vision-tower state dict "
            "on a base model), run directory or encoder file also works; see docs/models.md, 'Model specs'. "
            "Listing downloads nothing.")
    return Listing("models", ("spec", "base", "objective", "eps", "from"), rows, note, details)


def _datasets() -> Listing:
    from simclip_bench.data import catalog

    rows = [(catalog.BUILTIN, "built-in generated shapes (8 classes, 32 px), no files needed"),
            (catalog.MANY_CLASS_BUILTIN, "the same images, 64 classes: shape x colour ('red circle'), no files needed")]
    rows += [(name, "collection: " + ", ".join(members)) for name, members in catalog.COLLECTIONS.items()]
    rows += [(name, "CLIP_benchmark dataset, read from --dataset-root (never downloaded)")
             for name in catalog.CLIP_BENCHMARK_DATASETS]
    rows.append(("PATH", "an ImageFolder directory (one sub-folder per class)"))
    return Listing("datasets", ("name", "description"), rows)


def _attacks() -> Listing:
    from simclip_bench.attacks.registry import ALIASES, NAMED_ENSEMBLES, SINGLE_ATTACKS

    rows = [(a.name, f"{a.kind}, loss {a.loss}, {a.n_iter} {'queries' if a.kind == 'square' else 'iterations'}"
             + (f", {a.n_targets} targets" if a.n_targets else "")) for a in SINGLE_ATTACKS.values()]
    rows += [(alias, f"alias of {target}") for alias, target in ALIASES.items()]
    rows += [(name, f"ensemble {spec}: worst case per sample") for name, spec in NAMED_ENSEMBLES.items()]
    rows += [("a+b+...", "ensemble of single attacks, each on the samples still robust"),
             ("name*K", "an APGD attack with K restarts, each on the samples still robust, e.g. apgd-ce*5"),
             ("autoattack", "standard AutoAttack through the reference code (pyautoattack)"),
             ("ref:<ensemble>", "an ensemble through the reference code, e.g. ref:apgd-ce*5+apgd-t"),
             ("none", "clean accuracy only")]
    return Listing("attacks", ("name", "description"), rows)


def _objectives() -> Listing:
    from simclip_bench.train.objective_names import DEFAULT_OBJECTIVE, OBJECTIVE_SUMMARIES

    rows = [(name, summary + (" (default)" if name == DEFAULT_OBJECTIVE else ""))
            for name, summary in OBJECTIVE_SUMMARIES.items()]
    return Listing("objectives", ("name", "description"), rows)


def _protocols() -> Listing:
    from simclip_bench.jobs.suites import SUITES
    from simclip_bench.tasks.protocols import PROTOCOLS

    rows = [(f"eval --protocol {p.name}", p.description) for p in PROTOCOLS.values()]
    rows += [(f"bench --suite {s.name}", s.describe()) for s in SUITES.values()]
    return Listing("protocols", ("name", "description"), rows)


def _tasks() -> Listing:
    from simclip_bench.jobs.suites import TASK_RUNNERS
    from simclip_bench.leaderboard.headline import HEADLINES

    rows = [(t, f"headline {h.metric}" + ("" if t in TASK_RUNNERS else " (no benchmark runner yet)"))
            for t, h in HEADLINES.items()]
    return Listing("tasks", ("name", "description"), rows)


KINDS: dict[str, Callable[[], Listing]] = {"models": _models, "datasets": _datasets, "attacks": _attacks,
                                           "objectives": _objectives, "protocols": _protocols, "tasks": _tasks}


def listing(kind: str) -> Listing:
    """The listing of ``kind``; an unknown kind raises UserError suggesting the closest one."""
    key = kind.strip().lower()
    if key not in KINDS:
        raise UserError(f"nothing called {kind!r} to list{did_you_mean(key, KINDS)}; choose one of {', '.join(KINDS)}")
    return KINDS[key]()
