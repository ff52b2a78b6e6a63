"""Model cards: one small record per evaluated model, written beside the result files.

A card says what a model is (base architecture and tag, training objective, eps and steps, the
sha256 of the evaluated vision tower) and where it came from. Cards are built from the spec as
given, without loading weights, and saved in ``model_cards.json`` when a model is evaluated, so
the leaderboard can join them in later even when a run directory is long gone. Merging keeps
one card per (model, checkpoint sha256); the file lists them in a stable order.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from simclip_bench.models.builtin import BUILTIN_MODELS
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text, read_safetensors_metadata
from simclip_bench.models.known_checkpoints import known_by_spec
from simclip_bench.results.store import locked
from simclip_bench.runs import RUN_CONFIG

CARDS_FILE = "model_cards.json"
PRETRAINED = "none (pretrained)"
_TRAINING_KEYS = ("lr", "batch_size", "weight_decay", "warmup_steps", "attack_steps", "attack_step_size",
                  "attack_momentum", "attack_loss", "attack_start", "anchor_weight", "precision", "collapse_stop",
                  "seed", "data", "run_id", "created_at", "git_sha", "package_version", "base_checkpoint_hash")
# From the run's summary line (the last line of metrics.jsonl): how training ended.
_SUMMARY_KEYS = ("val_zero_shot_before", "val_zero_shot_after", "collapse_warned_at_step")
METRICS_FILE = "metrics.jsonl"


def _run_summary(run_dir: Path) -> dict:
    """The summary line of a finished run's ``metrics.jsonl`` (only the keys cards show), or empty."""
    path = run_dir / METRICS_FILE
    try:
        last = json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return {}
    return {k: last[k] for k in _SUMMARY_KEYS if last.get(k) is not None} if isinstance(last, dict) else {}


@dataclass(frozen=True)
class ModelCard:
    """What one evaluated encoder is and where it came from."""

    model: str
    checkpoint_sha256: str
    name: str
    arch: str
    tag: str
    objective: str = PRETRAINED
    train_eps: str = ""
    train_steps: int | None = None
    base_model: str = ""
    source: str = ""
    paper: str = ""
    training: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.checkpoint_sha256)

    def display_fields(self) -> list[tuple[str, str]]:
        """(label, value) pairs shown on a rendered card, in order; empty values included (renderers skip them)."""
        fields = [("spec", self.model), ("checkpoint sha256", self.checkpoint_sha256), ("architecture", self.arch),
                  ("tag", self.tag), ("base model", self.base_model), ("objective", self.objective),
                  ("training eps", self.train_eps),
                  ("training steps", "" if self.train_steps is None else str(self.train_steps)),
                  ("source", self.source), ("paper", self.paper)]
        return fields + [(k, str(v)) for k, v in sorted(self.training.items())]

    @property
    def slug(self) -> str:
        """A stable anchor for links: the card's name made URL-safe, plus the start of the hash."""
        base = re.sub(r"[^a-z0-9]+", "-", self.name.lower())[:40].strip("-") or "model"
        return f"{base}-{self.checkpoint_sha256[:8]}"


def _trained_card(model: str, sha: str, config: dict, meta_extra: dict, where: str,
                  summary: dict | None = None) -> ModelCard:
    base = config.get("base_model") or config.get("model") or meta_extra.get("base_model", "")
    base_card = card_for_spec(base, "") if base else None
    objective = config.get("objective") or meta_extra.get("objective", "unknown")
    anchor = config.get("anchor_weight") or meta_extra.get("anchor_weight")
    if anchor:  # the blend of the paper's loss and the released code's anchor
        objective = f"{objective} + anchor {anchor:g}"
    eps = str(config.get("eps") or meta_extra.get("eps", ""))
    steps = config.get("steps") or meta_extra.get("steps")
    return ModelCard(model=model, checkpoint_sha256=sha, name=f"{base} + {objective} {eps}".strip(),
                     arch=config.get("arch") or (base_card.arch if base_card else ""),
                     tag=base_card.tag if base_card else "", objective=objective, train_eps=eps,
                     train_steps=int(steps) if steps is not None else None, base_model=base,
                     source=f"simclip train run {where}",
                     training={**{k: config[k] for k in _TRAINING_KEYS if k in config}, **(summary or {})})


def _encoder_card(model: str, sha: str, encoder: Path) -> ModelCard:
    meta = read_safetensors_metadata(encoder)
    extra = json.loads(meta.get("extra") or "{}")
    extra.setdefault("base_model", meta.get("base_model", ""))
    config_path = encoder.parent / RUN_CONFIG
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.setdefault("arch", meta.get("arch", ""))
    return _trained_card(model, sha, config, extra, str(encoder.parent), _run_summary(encoder.parent))


def card_for_spec(model: str, checkpoint_sha256: str) -> ModelCard:
    """The card of the model that ``model`` (a ``--model`` spec) names; reads metadata only, never weights."""
    if model in BUILTIN_MODELS:
        b = BUILTIN_MODELS[model]
        return ModelCard(model, checkpoint_sha256, model, b.arch, "builtin", source=f"shipped with simclip-bench: "
                         f"{b.description}")
    known = known_by_spec(model)
    if known:
        return ModelCard(model, checkpoint_sha256, known.name, known.arch, known.base_tag, known.objective,
                         known.eps, base_model=known.base_spec, source=known.source,
                         paper=known.paper)
    path = Path(model).expanduser()
    if path.is_dir() and (path / ENCODER_FILENAME).is_file():
        return _encoder_card(model, checkpoint_sha256, path / ENCODER_FILENAME)
    if path.is_file() and path.suffix == ".safetensors":
        return _encoder_card(model, checkpoint_sha256, path)
    if model.startswith("hf-hub:"):
        return ModelCard(model, checkpoint_sha256, model, model, "", source=f"Hugging Face hub {model[7:]}")
    if path.is_dir():
        return ModelCard(model, checkpoint_sha256, model, "local-dir", "", source=f"open_clip folder {model}")
    if ":" in model:
        arch, tag = model.split(":", 1)
        return ModelCard(model, checkpoint_sha256, model, arch, tag, source=f"open_clip pretrained {arch}:{tag}")
    return ModelCard(model, checkpoint_sha256, model, "", "", source="unknown")


def read_cards(results_dir: Path) -> dict[tuple[str, str], ModelCard]:
    """Cards saved in ``results_dir``, keyed by (model, checkpoint sha256); empty when there is no file."""
    path = Path(results_dir) / CARDS_FILE
    if not path.is_file():
        return {}
    names = {f.name for f in fields(ModelCard)}
    cards = [ModelCard(**{k: v for k, v in raw.items() if k in names}) for raw in json.loads(path.read_text())]
    return {c.key: c for c in cards}


def write_cards(results_dir: Path, cards: list[ModelCard]) -> Path:
    """Merge ``cards`` into ``results_dir/model_cards.json`` (a new card replaces one with the same key).

    Read and rewrite happen under the result store's lock, so two evaluations writing to one folder at
    once keep each other's cards.
    """
    path = Path(results_dir) / CARDS_FILE
    with locked(Path(results_dir)):
        merged = read_cards(results_dir)
        merged.update({c.key: c for c in cards})
        text = json.dumps([asdict(merged[k]) for k in sorted(merged)], indent=2, sort_keys=True) + "\n"
        atomic_write_text(path, text)
    return path


def record_cards_for_rows(results_dir: Path, rows: list[dict]) -> Path | None:
    """Write a card for every (model, checkpoint_hash) in freshly written result rows."""
    keys = sorted({(r["model"], r["checkpoint_hash"]) for r in rows})
    return write_cards(results_dir, [card_for_spec(m, h) for m, h in keys]) if keys else None
