"""Model cards: what each evaluated model is and where it came from, read from metadata, never weights."""
from __future__ import annotations

import json

import torch

from simclip_bench.models.checkpoint import ENCODER_FORMAT, save_safetensors_atomic
from simclip_bench.results.model_cards import (
    PRETRAINED,
    card_for_spec,
    read_cards,
    record_cards_for_rows,
    write_cards,
)

SHA = "f" * 64


def _run_dir(tmp_path, with_config: bool = True):
    run = tmp_path / "runs" / "r1"
    meta = {"format": ENCODER_FORMAT, "base_model": "tiny-clip", "arch": "simclip-tiny",
            "extra": json.dumps({"objective": "simclip-anchored", "eps": "4/255", "steps": 250})}
    save_safetensors_atomic({"w": torch.zeros(1)}, run / "encoder.safetensors", meta)
    if with_config:
        (run / "config.json").write_text(json.dumps({
            "model": "tiny-clip", "base_model": "tiny-clip", "arch": "simclip-tiny", "objective": "simclip-anchored",
            "eps": "4/255", "steps": 250, "lr": 0.001, "batch_size": 64, "seed": 0, "git_sha": "abc",
            "run_id": "20260101T000000Z-000000", "out": str(run)}))
    return run


def test_builtin_model_card_names_its_architecture_and_shipped_weights():
    card = card_for_spec("tiny-clip", SHA)
    assert (card.arch, card.tag, card.objective, card.checkpoint_sha256) == ("simclip-tiny", "builtin", PRETRAINED, SHA)
    assert "shipped" in card.source


def test_known_public_checkpoint_card_carries_its_paper_and_training_eps():
    card = card_for_spec("hf-hub:chs20/fare4-clip", SHA)
    assert (card.arch, card.tag, card.objective, card.train_eps) == ("ViT-L-14", "openai", "fare", "4/255")
    assert "2402.12336" in card.paper and card.source == "https://huggingface.co/chs20/fare4-clip"


def test_run_directory_card_reads_objective_eps_steps_and_base_from_the_run(tmp_path):
    card = card_for_spec(str(_run_dir(tmp_path)), SHA)
    assert (card.base_model, card.arch, card.tag) == ("tiny-clip", "simclip-tiny", "builtin")
    assert (card.objective, card.train_eps, card.train_steps) == ("simclip-anchored", "4/255", 250)
    assert card.training["lr"] == 0.001 and card.training["git_sha"] == "abc"
    assert card.name == "tiny-clip + simclip-anchored 4/255"


def test_encoder_file_without_its_config_falls_back_to_the_file_metadata(tmp_path):
    run = _run_dir(tmp_path, with_config=False)
    card = card_for_spec(str(run / "encoder.safetensors"), SHA)
    assert (card.objective, card.train_eps, card.train_steps, card.base_model) == (
        "simclip-anchored", "4/255", 250, "tiny-clip")


def test_open_clip_spec_card_splits_architecture_and_tag():
    card = card_for_spec("ViT-B-32:laion2b_s34b_b79k", SHA)
    assert (card.arch, card.tag) == ("ViT-B-32", "laion2b_s34b_b79k")


def test_writing_cards_merges_by_model_and_hash_in_a_stable_order(tmp_path):
    write_cards(tmp_path, [card_for_spec("tiny-clip", SHA)])
    write_cards(tmp_path, [card_for_spec("hf-hub:chs20/fare2-clip", SHA), card_for_spec("tiny-clip", SHA)])
    cards = read_cards(tmp_path)
    assert sorted(cards) == [("hf-hub:chs20/fare2-clip", SHA), ("tiny-clip", SHA)]
    text = (tmp_path / "model_cards.json").read_text()
    write_cards(tmp_path, [])
    assert (tmp_path / "model_cards.json").read_text() == text


def test_cards_are_recorded_for_every_model_in_fresh_result_rows(tmp_path):
    rows = [{"model": "tiny-clip", "checkpoint_hash": SHA}, {"model": "tiny-clip", "checkpoint_hash": SHA},
            {"model": "hf-hub:chs20/tecoa4-clip", "checkpoint_hash": "e" * 64}]
    record_cards_for_rows(tmp_path, rows)
    assert len(read_cards(tmp_path)) == 2


def test_a_card_slug_is_a_safe_anchor():
    card = card_for_spec("<b>weird name</b>", SHA)
    assert card.slug == f"b-weird-name-b-{SHA[:8]}"


def test_a_run_card_shows_the_blend_its_training_attack_and_how_training_ended(tmp_path):
    run = _run_dir(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config.update(objective="simclip", anchor_weight=1.0, attack_momentum=0.9, attack_loss="cosine")
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": -0.5}\n{"step": 250, "val_zero_shot_before": 0.9, '
                                       '"val_zero_shot_after": 0.136, "collapse_warned_at_step": 30}\n')
    card = card_for_spec(str(run), SHA)
    assert card.objective == "simclip + anchor 1" and card.name == "tiny-clip + simclip + anchor 1 4/255"
    assert card.training["attack_momentum"] == 0.9 and card.training["attack_loss"] == "cosine"
    assert card.training["collapse_warned_at_step"] == 30 and card.training["val_zero_shot_after"] == 0.136
