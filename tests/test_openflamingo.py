"""OpenFlamingo (``--vlm openflamingo:DIR``) on a tiny random model built from configs (tests/_tiny_openflamingo.py):
RobustVLM's zero- and few-shot prompts and labels, generation, gradients to the image, one APGD step and the
ensemble end to end, and a loader that refuses checkpoints of another shape."""
import pytest
import torch

pytest.importorskip("transformers")

from _tiny_openflamingo import tiny_flamingo, write_folder  # noqa: E402

from simclip_bench.errors import UserError  # noqa: E402
from simclip_bench.vlm.openflamingo import OpenFlamingoVLM, caption_text, vqa_text  # noqa: E402


def make_vlm(shots: int = 0) -> OpenFlamingoVLM:
    model, tokenizer, loaded = tiny_flamingo()
    enc = loaded.model.encoder
    return OpenFlamingoVLM(model, tokenizer, 32, enc.mean.flatten().tolist(), enc.std.flatten().tolist(), shots=shots,
                           every=2)


@pytest.fixture(scope="module")
def vlm():
    return make_vlm()


def test_prompts_are_robustvlms(vlm):
    # of_eval_model_adv.py get_caption_prompt / get_vqa_prompt; colons removed from answers
    assert caption_text() == "<image>Output:" and caption_text("a: dog") == "<image>Output:a dog<|endofchunk|>"
    assert vqa_text("what is it?", "red") == "<image>Question:what is it? Short answer:red<|endofchunk|>"
    # zero-shot: two text-only demonstrations (compute_effective_num_shots), their <image> removed
    demos = [("a red circle ", None), ("a blue square", None)]
    assert vlm.demonstrations_per_prompt == 2
    assert vlm.caption_prompt("coco", demos=demos) == (
        "Output:a red circle<|endofchunk|>Output:a blue square<|endofchunk|><image>Output:")
    assert vlm.vqa_prompt("what color is it?", demos=[("what shape is it?", "star", None)] * 2) == (
        "Question:what shape is it? Short answer:star<|endofchunk|>" * 2
        + "<image>Question:what color is it? Short answer:")


def test_few_shot_prompts_keep_their_images_and_tags():
    few = make_vlm(shots=1)
    image = torch.rand(3, 32, 32)
    prompt = few.caption_prompt(demos=[("a red circle", image)])
    assert prompt == "<image>Output:a red circle<|endofchunk|><image>Output:" and few.demonstrations_per_prompt == 1
    assert len(prompt.context_images) == 1 and prompt.context_images[0] is image
    x = torch.rand(2, 3, 32, 32)
    vision_x = few._vision_x(x, [prompt, prompt])
    assert vision_x.shape == (2, 2, 3, 32, 32)  # the demonstration's image first, the query image last


def test_labels_score_the_answer_only(vlm):
    # get_label(mode="colon"): mask up to the last ":" and the first token, <image>, <|endofchunk|>, padding
    texts = ["Output:a red circle<|endofchunk|><image>Output:a blue star<|endofchunk|>",
             "<image>Output:no<|endofchunk|>"]
    ids, _ = vlm._encode(texts)
    tok = vlm.tokenizer
    assert [tok.convert_ids_to_tokens(row[keep]) for row, keep in zip(ids, vlm.labels(ids), strict=True)] == [
        ["a", "blue", "star"], ["no"]]


def test_cross_attention_is_in_front_of_every_second_layer_and_reads_the_preceding_image():
    model, _, _ = tiny_flamingo()
    layers = model.lang_encoder.transformer.blocks
    assert [layer.gated_cross_attn_layer is not None for layer in layers] == [False, True, False, True]
    names = set(model.state_dict())
    assert "lang_encoder.transformer.blocks.1.gated_cross_attn_layer.attn.to_kv.weight" in names  # OpenFlamingo's
    assert "perceiver.layers.0.0.norm_media.weight" in names and "perceiver.latents" in names
    block = layers[1].gated_cross_attn_layer
    media = torch.randn(1, 2, 4, 128)
    x = torch.randn(1, 5, 32)
    text_time = torch.tensor([[0, 1, 1, 2, 2]])  # before any image, after image 1, after image 2
    out = block.attn(x, media, text_time)
    assert torch.all(out[0, 0] == 0)  # text before any image attends to nothing
    for image, follows in ((1, [3, 4]), (0, [1, 2])):  # change one image: only the text right after it changes
        other = media.clone()
        other[:, image] = torch.randn(1, 4, 128)
        changed = block.attn(x, other, text_time)
        moved = [k for k in range(5) if not torch.allclose(changed[0, k], out[0, k])]
        assert moved == follows


def test_generation_loss_and_gradients_reach_the_image(vlm):
    prompt = vlm.caption_prompt(demos=[("a red circle", None)] * 2)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss, _ = vlm.target_scores(x, [prompt] * 2, ["a red circle", "a blue star"])
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    alone, _ = vlm.target_scores(x[1:].detach(), [prompt], ["a blue star"])
    assert torch.allclose(alone, loss[1:].detach(), atol=1e-4)  # left padding masked: batch-invariant
    for task in ("captioning", "vqa"):
        g = vlm.generation(task)
        assert (g.num_beams, g.length_penalty) == (3, -2.0 if task == "captioning" else 0.0)
        texts = vlm.generate_with(x.detach(), [prompt] * 2, g)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert vlm.generation("vqa", "textvqa").max_new_tokens == 10


def test_one_apgd_step_and_the_ensemble_end_to_end(vlm):
    from simclip_bench.attacks.apgd import APGD
    from simclip_bench.tasks.lm_objective import LanguageModelObjective
    from simclip_bench.tasks.vlm_attack import VQA_TARGETS, VLMAttackConfig, attack_vlm

    prompts = [vlm.vqa_prompt("what color is it?", demos=[("what shape is it?", "star", None)] * 2)] * 2
    x = torch.rand(2, 3, 32, 32)
    truth = ["red", "blue"]
    before = vlm.loss(x, prompts, truth)
    result = APGD(8 / 255, n_iter=1, batch_size=2).run(LanguageModelObjective(vlm, prompts, truth), x,
                                                       torch.arange(2))
    assert (result.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert (vlm.loss(result.x_adv, prompts, truth) >= before - 1e-6).all()
    runs = []
    clean = vlm.generate_with(x, prompts, vlm.generation("vqa"))
    config = VLMAttackConfig(eps=4 / 255, n_iter=2, targets=VQA_TARGETS, batch_size=2,
                             generation=vlm.generation("vqa"))
    outcome = attack_vlm(vlm, x, prompts, [["red", "green"], ["blue"]], lambda idx, texts: [1.0] * len(texts), clean,
                         [1.0, 1.0], config, on_run_done=runs.append)
    assert runs == ["apgd-gt1", "apgd-gt2", "apgd-fp32-final", "apgd-target:maybe", "apgd-target:Word"]
    assert (outcome.x_adv - x).abs().max() <= 4 / 255 + 1e-6 and len(outcome.texts) == 2


def test_the_folder_loads_into_the_same_model(tmp_path):
    from simclip_bench.vlm.load import load_vlm

    write_folder(tmp_path)
    loaded = load_vlm(f"openflamingo:{tmp_path}", "tiny-clip")
    assert loaded.model_id == f"{tmp_path.name}[tiny-clip]" and len(loaded.vlm_hash) == 64
    reference = make_vlm()
    x = torch.rand(1, 3, 32, 32)
    prompt = reference.caption_prompt(demos=[("a red circle", None)] * 2)
    assert torch.allclose(loaded.vlm.loss(x, [prompt], ["a star"]), reference.loss(x, [prompt], ["a star"]), atol=1e-5)
    assert load_vlm(f"openflamingo:{tmp_path}", "tiny-clip", shots=1).vlm_hash != loaded.vlm_hash  # shots: identity


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    from simclip_bench.vlm.load import load_vlm

    write_folder(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt")
    torch.save({**state, "lang_encoder.transformer.blocks.0.gated_cross_attn_layer.attn_gate": torch.zeros(1)},
               tmp_path / "checkpoint.pt")  # a cross-attention block where this model has none
    with pytest.raises(UserError, match="name nothing in this OpenFlamingo"):
        load_vlm(f"openflamingo:{tmp_path}", "tiny-clip")
    torch.save({k: v for k, v in state.items() if not k.startswith("perceiver.")}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="lacks"):
        load_vlm(f"openflamingo:{tmp_path}", "tiny-clip")
    with pytest.raises(UserError, match="expected a folder"):
        load_vlm(f"openflamingo:{tmp_path / 'nothing'}", "tiny-clip")


def test_the_vision_tokens_are_the_last_blocks_patch_tokens_without_the_final_norm(vlm):
    # flamingo.py _encode_vision_x: vision_encoder(x)[1], open_clip 2.19's output_tokens (RobustVLM pins 2.19.0):
    # the tokens after the last block, class token dropped, ln_post applied to the pooled token only
    from simclip_bench.vlm.base import CROP
    from simclip_bench.vlm.openflamingo import patch_tokens

    visual = vlm.model.vision_encoder
    x = torch.randn(2, 3, 32, 32)
    tokens = patch_tokens(visual, x)
    by_hand = visual.transformer(visual._embeds(x))[:, 1:]
    assert tokens.shape == (2, 16, 128) and torch.equal(tokens, by_hand)
    assert not torch.allclose(tokens, visual.ln_post(by_hand))
    assert vlm.image_prep("captioning") == CROP  # the open_clip transform: resize, centre crop


def test_the_perceiver_and_cross_attention_default_to_openflamingos_sizes():
    from simclip_bench.vlm.flamingo_layers import GatedCrossAttentionBlock, PerceiverResampler

    perceiver = PerceiverResampler(1024)  # helpers.py defaults: depth 6, 8 heads of 64, 64 latents, ff x4
    assert perceiver.latents.shape == (64, 1024) and len(perceiver.layers) == 6
    assert perceiver.layers[0][0].to_q.weight.shape == (512, 1024)
    assert perceiver.layers[0][1][1].weight.shape == (4096, 1024)
    block = GatedCrossAttentionBlock(4096, 1024)
    assert block.attn.to_kv.weight.shape == (1024, 1024) and block.ff[1].weight.shape == (16384, 4096)
    assert block.attn_gate.item() == 0 and block.ff_gate.item() == 0
