"""One --model spec, every form; weights never unpickled unless --allow-unsafe-pickle; normalisation inside."""
import argparse
import json
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
from simclip_bench.models.vision_tower import UNSAFE_PICKLE_FLAG


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


@pytest.fixture()
def evil_pickle(tmp_path) -> tuple[Path, Path]:
    """A .pt whose unpickling writes a marker file: (the .pt, the marker that must never appear)."""
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _WritesAFile(marker)}, f, protocol=2)
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(evil_pickle):
    path, marker = evil_pickle
    with pytest.raises(UserError, match="refusing"):
        load_model(f"simclip-tiny:{path}")
    assert not marker.exists()


def test_the_refusal_names_the_flag_that_allows_full_unpickling(evil_pickle):
    path, marker = evil_pickle
    with pytest.raises(UserError) as refused:
        load_model(f"simclip-tiny:{path}")
    assert "pass --allow-unsafe-pickle (it can run arbitrary code)" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert not marker.exists()


def _save_with_training_args(state_dict: dict, path: Path) -> Path:
    """A checkpoint as old training scripts wrote it: the state dict beside an argparse.Namespace."""
    torch.save({"epoch": 2, "state_dict": state_dict, "args": argparse.Namespace(lr=1e-5, model="simclip-tiny")},
               path)
    return path


def test_a_checkpoint_saved_with_its_training_args_is_refused_without_the_flag(tmp_path, tiny):
    path = _save_with_training_args(tiny.model.clip.state_dict(), tmp_path / "old.pt")
    with pytest.raises(UserError, match=UNSAFE_PICKLE_FLAG):
        load_model(f"simclip-tiny:{path}")


def test_with_the_flag_it_loads_and_embeds_exactly_like_the_same_weights_as_plain_tensors(tmp_path, tiny):
    state = tiny.model.clip.state_dict()
    old = _save_with_training_args(state, tmp_path / "old.pt")
    torch.save(state, tmp_path / "plain.pt")
    unpickled = load_model(f"simclip-tiny:{old}", allow_unsafe_pickle=True)
    plain = load_model(f"simclip-tiny:{tmp_path / 'plain.pt'}")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(unpickled.model.encode_image(x), plain.model.encode_image(x))
    assert unpickled.checkpoint_hash == plain.checkpoint_hash == tiny.checkpoint_hash


def test_a_resumed_run_asks_for_the_flag_again_instead_of_reading_it_back(tmp_path, tiny):
    from simclip_bench.train.loop import resume

    old = _save_with_training_args(tiny.model.clip.state_dict(), tmp_path / "old.pt")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": f"simclip-tiny:{old}", "allow_unsafe_pickle": True,
                                                 "device": "cpu", "steps": 2, "batch_size": 4, "train_size": 8,
                                                 "probe_size": 0, "warmup_steps": 0}))
    with pytest.raises(UserError, match=UNSAFE_PICKLE_FLAG):
        resume(run)


@pytest.mark.parametrize("command", ["eval", "attack", "train", "export"])
def test_every_command_that_loads_a_model_takes_the_flag(command):
    from typer.main import get_command

    from simclip_bench.cli import app

    options = {opt for p in get_command(app).commands[command].params for opt in p.opts}
    assert UNSAFE_PICKLE_FLAG in options


def test_the_cli_warns_in_one_line_when_the_flag_is_used_and_refuses_in_one_line_without(tmp_path, tiny):
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    old = _save_with_training_args(tiny.model.clip.state_dict(), tmp_path / "old.pt")
    args = ["export", f"simclip-tiny:{old}", "--format", "open_clip", "--out"]
    refused = CliRunner().invoke(app, [*args, str(tmp_path / "a")])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [refused.output.strip()]
    assert UNSAFE_PICKLE_FLAG in refused.output
    allowed = CliRunner().invoke(app, [*args, str(tmp_path / "b"), UNSAFE_PICKLE_FLAG])
    assert allowed.exit_code == 0, allowed.output
    warnings = [line for line in allowed.output.splitlines() if line.startswith("simclip: warning:")]
    assert len(warnings) == 1 and "arbitrary code" in warnings[0]


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


@pytest.mark.parametrize("spec, fix", [
    ("ViT-B-32", "ViT-B-32:openai"),  # a pretrained tag of open_clip's registry
    ("simclip-tiny", "the built-in tiny-clip"),  # no tag, but a built-in model of that architecture
])
def test_an_architecture_without_weights_says_how_to_give_them(spec, fix):
    with pytest.raises(UserError) as refused:
        load_model(spec)
    message = str(refused.value)
    assert "open_clip architecture without weights" in message and fix in message
    assert f"{spec}:/path/to/weights.pt" in message and "did you mean" not in message


def test_an_encoder_whose_metadata_names_itself_as_its_base_is_one_error_not_a_recursion(tmp_path, tiny):
    visual = tiny.model.clip.visual
    run = tmp_path / "run"
    save_encoder(visual, run / ENCODER_FILENAME, base_model=str(run), arch="simclip-tiny")  # itself, as its folder
    with pytest.raises(UserError, match="names itself as the base model"):
        load_model(str(run))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"  # a loop through a second file
    save_encoder(visual, a, base_model=str(b), arch="simclip-tiny")
    save_encoder(visual, b, base_model=str(a), arch="simclip-tiny")
    with pytest.raises(UserError, match=r"names itself as the base model .*a\.safetensors -> .*b\.safetensors -> "):
        load_model(str(a))


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
    with pytest.raises(UserError, match="this machine is offline"):
        load_model(spec)


def test_openai_weights_get_the_quick_gelu_they_were_trained_with():
    from simclip_bench.models.open_clip_build import needs_quick_gelu

    assert needs_quick_gelu("ViT-L-14", "openai")
    assert not needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not needs_quick_gelu("ViT-B-32", None)
    assert not needs_quick_gelu("ViT-B-32", "/some/local/file.safetensors")
