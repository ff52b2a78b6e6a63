"""``LoadedVLM.vlm_hash``: every loader sets it from the weights other than the swapped tower and from the adapter's
``describe()``, so two VLMs that could answer differently never share an identity, and swapping the encoder
(identified by ``checkpoint_hash``) leaves it as it is."""
import pytest
import torch

from simclip_bench.vlm.base import Generation, vlm_identity
from simclip_bench.vlm.load import load_vlm


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """tiny-clip with slightly other weights, as an encoder file: another checkpoint_hash."""
    from simclip_bench.models.checkpoint import save_encoder
    from simclip_bench.models.spec import load_model

    path = tmp_path_factory.mktemp("enc") / "encoder.safetensors"
    visual = load_model("tiny-clip").model.clip.visual
    with torch.no_grad():
        for p in visual.parameters():
            p.mul_(1.01)
    save_encoder(visual, path, base_model="tiny-clip", arch="simclip-tiny")
    return path


def test_the_tiny_vlm_hash_covers_its_head_and_its_description_not_the_encoder(tmp_path, monkeypatch, encoder):
    from simclip_bench.vlm.tiny import TinyVLM, load_tiny_vlm_head, save_tiny_vlm

    base = load_vlm("tiny-vlm", "tiny-clip")
    assert len(base.vlm_hash) == 64 and load_vlm("tiny-vlm", "tiny-clip").vlm_hash == base.vlm_hash
    other_encoder = load_vlm("tiny-vlm", str(encoder))
    assert other_encoder.checkpoint_hash != base.checkpoint_hash and other_encoder.vlm_hash == base.vlm_hash
    head, vocab, _ = load_tiny_vlm_head()
    with torch.no_grad():
        head.lm_head.weight.mul_(1.5)
    save_tiny_vlm(head, vocab, tmp_path / "other.safetensors")
    assert load_vlm(str(tmp_path / "other.safetensors"), "tiny-clip").vlm_hash != base.vlm_hash
    monkeypatch.setattr(TinyVLM, "generation", lambda self, task, dataset="": Generation(max_new_tokens=7))
    assert load_vlm("tiny-vlm", "tiny-clip").vlm_hash != base.vlm_hash  # decoding is part of the identity


def test_the_llava_hash_ignores_the_swapped_tower_but_not_the_language_model(tmp_path, encoder):
    pytest.importorskip("transformers")
    from test_vlm_llava import tiny_llava, tiny_tokenizer

    folder = tmp_path / "llava"
    tiny_llava().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    first = load_vlm(f"llava:{folder}", "tiny-clip")
    assert len(first.vlm_hash) == 64 and load_vlm(f"llava:{folder}", "tiny-clip").vlm_hash == first.vlm_hash
    swapped = load_vlm(f"llava:{folder}", str(encoder))
    assert swapped.checkpoint_hash != first.checkpoint_hash and swapped.vlm_hash == first.vlm_hash
    model = tiny_llava()
    with torch.no_grad():
        model.lm_head.weight.add_(0.01)
    model.save_pretrained(tmp_path / "other")
    tiny_tokenizer().save_pretrained(tmp_path / "other")
    assert load_vlm(f"llava:{tmp_path / 'other'}", "tiny-clip").vlm_hash != first.vlm_hash
    assert vlm_identity("x", first.vlm) == vlm_identity("x", load_vlm(f"llava:{folder}", "tiny-clip").vlm)
