"""The built-in tiny VLM: shipped weights that caption and answer, a swappable encoder, a differentiable
per-sample loss, and the training command that makes the weights."""
import pytest
import torch
from typer.testing import CliRunner

from simclip_bench.data.vlm_samples import shapes_captioning, shapes_vqa
from simclip_bench.errors import UserError
from simclip_bench.metrics.cider import cider_d
from simclip_bench.metrics.vqa_accuracy import mean_vqa_accuracy
from simclip_bench.vlm.load import load_vlm
from simclip_bench.vlm.tiny import load_tiny_vlm_head
from simclip_bench.vlm.words import shapes_vocabulary, split_words

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_vlm():
    return load_vlm("tiny-vlm", "tiny-clip", "cpu")


def test_shipped_weights_caption_and_answer_the_generated_test_images(tiny_vlm):
    vlm = tiny_vlm.vlm
    caps = shapes_captioning(60)
    captions = vlm.generate(caps.images(32), [vlm.caption_prompt()] * 60)
    assert cider_d(captions, [s.references for s in caps.samples]) > 3.0  # validation: 4.6 (templated captions)
    qa = shapes_vqa(60)
    answers = vlm.generate(qa.images(32), [vlm.vqa_prompt(s.question) for s in qa.samples])
    assert mean_vqa_accuracy(answers, [s.references for s in qa.samples]) > 0.8  # validation: 95.5 %


def test_the_shipped_vocabulary_is_the_generated_one():
    _, vocab, provenance = load_tiny_vlm_head()
    assert vocab.words == shapes_vocabulary(["caption:", "maybe", "word"]).words
    assert provenance["config"]["seed"] == 0 and provenance["config"]["steps"] == 4000


def test_loss_is_per_sample_batch_invariant_and_reaches_the_pixels(tiny_vlm):
    vlm = tiny_vlm.vlm
    data = shapes_captioning(3)
    x = data.images(32).requires_grad_(True)
    targets = [s.references[0] for s in data.samples]
    loss = vlm.loss(x, [vlm.caption_prompt()] * 3, targets)
    assert loss.shape == (3,) and (loss > 0).all()
    loss.sum().backward()
    assert x.grad.abs().sum() > 0
    alone = vlm.loss(x[2:].detach(), [vlm.caption_prompt()], targets[2:])
    assert torch.allclose(alone, loss[2:].detach(), atol=1e-5)
    wrong = vlm.loss(x.detach(), [vlm.caption_prompt()] * 3, [targets[1], targets[2], targets[0]])
    assert (wrong > loss.detach()).all()  # the right caption is the likelier one


def test_greedy_match_says_whether_generation_starts_with_the_target(tiny_vlm):
    vlm = tiny_vlm.vlm
    x = shapes_captioning(4).images(32)
    generated = vlm.generate(x, [vlm.caption_prompt()] * 4)
    _, match = vlm.target_scores(x, [vlm.caption_prompt()] * 4, generated)
    assert match.all()
    _, match = vlm.target_scores(x, [vlm.caption_prompt()] * 4, ["maybe word"] * 4)
    assert not match.any()


def test_a_fine_tuned_encoder_swaps_in_without_retraining(tmp_path, tiny_vlm):
    from simclip_bench.cli import app

    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--steps", "2", "--batch-size", "8", "--train-size", "32",
                                 "--warmup-steps", "1", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    swapped = load_vlm("tiny-vlm", str(run), "cpu")
    assert swapped.checkpoint_hash != tiny_vlm.checkpoint_hash
    assert swapped.model_id == f"tiny-vlm[{run}]"
    # Same projector and decoder weights, another tower: the features, and only they, change.
    assert all(torch.equal(a, b) for a, b in zip(swapped.vlm.head.state_dict().values(),
                                                 tiny_vlm.vlm.head.state_dict().values(), strict=True))
    x = shapes_captioning(2).images(32)
    assert not torch.allclose(swapped.vlm.features(x), tiny_vlm.vlm.features(x))
    assert all(split_words(t) for t in swapped.vlm.generate(x, ["caption:"] * 2))


def test_bad_vlm_specs_are_user_errors():
    with pytest.raises(UserError, match="unknown --vlm"):
        load_vlm("tiny-vml", "tiny-clip")
    with pytest.raises(UserError, match="no such tiny-VLM weights file"):
        load_vlm("/no/such.safetensors", "tiny-clip")


def test_pretrain_vlm_command_writes_loadable_weights(tmp_path):
    from simclip_bench.cli import app

    out = tmp_path / "vlm.safetensors"
    result = runner.invoke(app, ["pretrain-vlm", "--steps", "3", "--train-size", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = load_vlm(str(out), "tiny-clip", "cpu")
    assert loaded.model_id == "vlm[tiny-clip]"
    assert len(loaded.vlm.generate(shapes_captioning(1).images(32), ["caption:"], max_new_tokens=3)) == 1
