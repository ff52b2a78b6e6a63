"""One --model spec, every form; weights never unpickled; normalisation inside the wrapper."""
import pickle
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from simclip_bench.errors import UserError
from simclip_bench.models.builtin import BUILTIN_MODELS
from simclip_bench.models.checkpoint import ENCODER_FILENAME, save_encoder
from simclip_bench.models.spec import load_model


def test_builtin_is_an_open_clip_architecture(tiny):
    assert "simclip-tiny" in open_clip.list_models()
    assert tiny.arch == "simclip-tiny"
    assert isinstance(tiny.model.clip, open_clip.CLIP)


def test_wrapper_normalises_inside_so_inputs_are_pixels(tiny):
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = tiny.model.clip.encode_image((x - mean) / std)
        assert torch.allclose(tiny.model.encode_image(x), direct, atol=1e-5)


def test_loaded_models_are_frozen_and_in_eval_mode(tiny):
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert not tiny.model.clip.training


def test_full_open_clip_checkpoint_loads_as_arch_colon_path(tmp_path, tiny):
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.clip.state_dict().items()}, str(path))
    loaded = load_model(f"simclip-tiny:{path}")
    assert loaded.checkpoint_hash == tiny.checkpoint_hash


def test_torch_pt_file_loads_with_weights_only(tmp_path, tiny):
    path = tmp_path / "full.pt"
    torch.save(tiny.model.clip.state_dict(), path)
    assert load_model(f"simclip-tiny:{path}").checkpoint_hash == tiny.checkpoint_hash


class _WritesAFile:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _WritesAFile(marker)}, f, protocol=2)
    with pytest.raises(UserError, match="refusing"):
        load_model(f"simclip-tiny:{path}")
    assert not marker.exists()


def test_encoder_checkpoint_and_run_directory_round_trip(tmp_path, tiny):
    run = tmp_path / "run"
    visual = tiny.model.clip.visual
    digest = save_encoder(visual, run / ENCODER_FILENAME, base_model="tiny-clip", arch="simclip-tiny")
    for spec in (str(run), str(run / ENCODER_FILENAME)):
        loaded = load_model(spec)
        assert loaded.checkpoint_hash == digest == tiny.checkpoint_hash
        assert loaded.model_id == spec


@pytest.mark.parametrize("spec, message", [
    ("tiny-clp", "did you mean 'tiny-clip'"),
    ("ViT-B-33:openai", "did you mean 'ViT-B-32'"),
    ("ViT-B-32:not-a-tag", "neither a pretrained tag"),
    ("", "empty model spec"),
])
def test_bad_specs_get_a_clear_message(spec, message):
    with pytest.raises(UserError, match=message):
        load_model(spec)


def test_directory_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match="encoder.safetensors"):
        load_model(str(tmp_path))


def test_builtin_weights_ship_with_the_package_and_are_small():
    weights = BUILTIN_MODELS["tiny-clip"].weights
    assert weights.is_file() and weights.stat().st_size < 8_000_000


def test_open_clip_local_dir_folder_loads(tmp_path, tiny):
    import json

    from simclip_bench.models.builtin import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "simclip-tiny.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in tiny.model.clip.state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    assert load_model(str(tmp_path)).checkpoint_hash == tiny.checkpoint_hash


@pytest.mark.parametrize("spec", ["hf-hub:nobody/no-such-model", "ViT-B-32:openai"])
def test_hub_download_failure_offline_is_one_clear_error(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not load open_clip model"):
        load_model(spec)


def test_openai_weights_get_the_quick_gelu_they_were_trained_with():
    from simclip_bench.models.spec import needs_quick_gelu

    assert needs_quick_gelu("ViT-L-14", "openai")
    assert not needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not needs_quick_gelu("ViT-B-32", None)
    assert not needs_quick_gelu("ViT-B-32", "/some/local/file.safetensors")
