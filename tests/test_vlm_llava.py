"""LLaVA (HF transformers) end to end on a tiny random LLaVA built from configs, offline, with the
built-in tiny CLIP swapped in as its vision tower: generate, loss, an attack step, gradients to the image."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

WORDS = ["a", "red", "blue", "circle", "square", "photo", "of", "provide", "short", "caption", "for", "this",
         "image", "USER:", "ASSISTANT:", "what", "shape", "is", "it", "?", ".", "Maybe", "Word", "answer", "the",
         "question", "using", "single", "word", "or", "phrase"]


def tiny_tokenizer():
    """A word-level fast tokenizer built in memory (no download): special tokens, then WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "<image>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=["<image>"])


def tiny_llava(vision_width: int = 128, image_size: int = 32, patch: int = 8):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=16)
    text = LlamaConfig(vocab_size=5 + len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=4, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    return LlavaForConditionalGeneration(config).eval()


def tiny_llava_with_tiny_clip(name: str = "tiny-llava"):
    """The tiny random LLaVA with the built-in tiny-clip swapped in as its vision tower, normalising as tiny-clip;
    returns it and the loaded tiny-clip."""
    from simclip_bench.models.hf_vision import open_clip_to_hf_vision
    from simclip_bench.models.spec import load_model
    from simclip_bench.vlm.llava import LlavaVLM, swap_vision_tower

    loaded = load_model("tiny-clip", "cpu")
    model = tiny_llava()
    swap_vision_tower(model, open_clip_to_hf_vision(loaded.model.clip.visual))
    enc = loaded.model.encoder
    return LlavaVLM(model, tiny_tokenizer(), name=name, mean=enc.mean.flatten().tolist(),
                    std=enc.std.flatten().tolist()), loaded


@pytest.fixture(scope="module")
def llava_with_tiny_clip():
    return tiny_llava_with_tiny_clip()


def test_the_swapped_tower_is_the_simclip_encoder(llava_with_tiny_clip):
    vlm, loaded = llava_with_tiny_clip
    x = torch.rand(2, 3, 32, 32)
    tower = vlm.model.model.vision_tower
    pooled = tower(vlm._pixels(x)).pooler_output  # post_layernorm(class token)
    visual = loaded.model.clip.visual
    tokens = visual.transformer(visual._embeds((x - loaded.model.encoder.mean) / loaded.model.encoder.std))
    assert torch.allclose(pooled, visual.ln_post(tokens[:, 0]), atol=1e-4)
    assert vlm.image_size == 32 and vlm.n_image_tokens == 16  # (32/8)^2 patches, class token dropped


def test_generate_returns_text_per_image(llava_with_tiny_clip):
    vlm, _ = llava_with_tiny_clip
    texts = vlm.generate(torch.rand(2, 3, 32, 32), [vlm.caption_prompt(), vlm.vqa_prompt("what shape is it ?")],
                         max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_loss_is_per_sample_and_gradients_reach_the_image(llava_with_tiny_clip):
    vlm, _ = llava_with_tiny_clip
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    loss = vlm.loss(x, [vlm.caption_prompt()] * 3, ["a red circle", "a blue square", "a photo"])
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # One sample's loss does not depend on its batch mates (left padding is masked).
    alone = vlm.loss(x[1:2].detach(), [vlm.caption_prompt()], ["a blue square"])
    assert torch.allclose(alone, loss[1:2].detach(), atol=1e-4)


def test_an_apgd_attack_on_the_language_model_loss_raises_it_inside_the_ball(llava_with_tiny_clip):
    from simclip_bench.attacks.apgd import APGD
    from simclip_bench.tasks.lm_objective import LanguageModelObjective

    vlm, _ = llava_with_tiny_clip
    x = torch.rand(2, 3, 32, 32)
    prompts, texts = [vlm.caption_prompt()] * 2, ["a red circle", "a blue square"]
    before = vlm.loss(x, prompts, texts)
    result = APGD(8 / 255, n_iter=5, batch_size=2).run(LanguageModelObjective(vlm, prompts, texts), x, torch.arange(2))
    assert (result.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert (vlm.loss(result.x_adv, prompts, texts) > before).all()


def test_a_tower_of_the_wrong_width_is_refused():
    from simclip_bench.errors import UserError
    from simclip_bench.models.hf_vision import open_clip_to_hf_vision
    from simclip_bench.models.spec import load_model
    from simclip_bench.vlm.llava import swap_vision_tower

    with pytest.raises(UserError, match="width"):
        visual = load_model("tiny-clip").model.clip.visual
        swap_vision_tower(tiny_llava(vision_width=64), open_clip_to_hf_vision(visual))


def test_load_llava_from_a_local_folder_with_a_swapped_encoder(tmp_path):
    from simclip_bench.vlm.load import load_vlm

    tiny_llava().save_pretrained(tmp_path / "llava")
    tiny_tokenizer().save_pretrained(tmp_path / "llava")
    loaded = load_vlm(f"llava:{tmp_path / 'llava'}", "tiny-clip", "cpu")
    assert loaded.model_id == "llava[tiny-clip]"
    assert len(loaded.vlm.generate(torch.rand(1, 3, 32, 32), [loaded.vlm.caption_prompt()], max_new_tokens=2)) == 1
