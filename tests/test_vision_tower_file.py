"""``--model BASE=FILE``: a released vision-tower state dict (Sim-CLIP's simclip4.pt) on its base model.

The files are built offline from random-init ViT-B-32 models, laid out as the releases are (the
``model.visual`` state dict, ``torch.save``d); nothing is downloaded. Bad files are in docs/reliability.md's
bad-input table (``tests/test_bad_input_table.py``).
"""
from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from simclip_bench.errors import UserError
from simclip_bench.models import known_checkpoints
from simclip_bench.models.spec import load_model

ARCH = "ViT-B-32"


def _random_clip(seed: int):
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A base (whole CLIP in a file) and a source whose vision tower differs: what fine-tuning leaves."""
    folder = tmp_path_factory.mktemp("towers")
    base, source = _random_clip(0), _random_clip(1)
    base_file = folder / "base.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(base_file))
    return folder, f"{ARCH}:{base_file}", base, source


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _embeddings(clip) -> torch.Tensor:
    with torch.no_grad():
        return clip.encode_image(_images())


LAYOUTS = {
    "plain (SimCLIP, RobustVLM)": lambda sd: sd,
    "module. prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "visual. prefix": lambda sd: {f"visual.{k}": v for k, v in sd.items()},
    "vision_encoder_state_dict": lambda sd: {"vision_encoder_state_dict": sd},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_loaded_vision_tower_gives_the_source_models_image_embeddings(models, layout):
    folder, base_spec, base, source = models
    tower = folder / f"{layout.split()[0]}.pt"
    torch.save(LAYOUTS[layout](source.visual.state_dict()), tower)
    loaded = load_model(f"{base_spec}={tower}").model.clip
    assert torch.equal(_embeddings(loaded), _embeddings(source))
    assert not torch.equal(_embeddings(loaded), _embeddings(base))


def test_the_text_tower_is_the_base_models(models):
    folder, base_spec, base, source = models
    torch.save(source.visual.state_dict(), folder / "text.pt")
    loaded = load_model(f"{base_spec}={folder / 'text.pt'}").model.clip
    tokens = open_clip.get_tokenizer(ARCH)(["a photo of a cat"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), base.encode_text(tokens))


def test_a_safetensors_vision_tower_loads_the_same(models):
    folder, base_spec, _, source = models
    tower = folder / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in source.visual.state_dict().items()}, str(tower))
    assert torch.equal(_embeddings(load_model(f"{base_spec}={tower}").model.clip), _embeddings(source))


@pytest.fixture
def release_on_vit_b32(models, monkeypatch):
    """The catalog's simclip4, its base pointed at the offline ViT-B-32 base file."""
    _, base_spec, _, _ = models
    arch, tag = base_spec.split(":", 1)
    entry = dataclasses.replace(known_checkpoints.KNOWN_CHECKPOINTS["simclip4"], arch=arch, base_tag=tag)
    monkeypatch.setitem(known_checkpoints.KNOWN_CHECKPOINTS, "simclip4", entry)


def test_a_catalog_name_supplies_the_base_model(models, release_on_vit_b32):
    folder, _, _, source = models
    torch.save(source.visual.state_dict(), folder / "released.pt")
    loaded = load_model(f"simclip4={folder / 'released.pt'}")
    assert torch.equal(_embeddings(loaded.model.clip), _embeddings(source))
    assert loaded.model_id == f"simclip4={folder / 'released.pt'}"


def test_a_plain_path_named_like_a_release_loads_as_that_release(models, release_on_vit_b32):
    folder, _, _, source = models
    (folder / "named").mkdir(exist_ok=True)
    torch.save(source.visual.state_dict(), folder / "named" / "simclip4.pt")
    loaded = load_model(str(folder / "named" / "simclip4.pt"))
    assert torch.equal(_embeddings(loaded.model.clip), _embeddings(source))


def test_the_real_release_names_vit_l_14_openai_as_its_base(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "simclip4.pt")
    with pytest.raises(UserError, match="ViT-L-14"):  # offline in tests: the base cannot come
        load_model(f"simclip4={tmp_path / 'simclip4.pt'}")


def test_a_tower_of_another_width_is_refused_in_one_line(models):
    folder, base_spec, _, _ = models
    torch.manual_seed(2)
    other = open_clip.create_model("ViT-B-16").visual.state_dict()
    torch.save(other, folder / "b16.pt")
    with pytest.raises(UserError, match="does not fit the vision tower of ViT-B-32") as e:
        load_model(f"{base_spec}={folder / 'b16.pt'}")
    assert "\n" not in str(e.value)


def test_the_model_card_of_a_release_file_carries_the_catalogs_facts():
    from simclip_bench.results.model_cards import card_for_spec

    card = card_for_spec("simclip4=/data/simclip4.pt", "0" * 64)
    assert (card.objective, card.train_eps, card.base_model) == ("simclip-anchored", "4/255", "ViT-L-14:openai")
    assert "arXiv 2407.14971" in card.paper
