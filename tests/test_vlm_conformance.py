"""LLaVA-1.5 as RobustVLM runs it, field by field (docs/protocols.md, "Conformance"): each test pins one field
to the reference file that defines it, on a tiny random LLaVA built from configs (tests/test_vlm_llava.py)."""
import numpy as np
import pytest
import torch

from simclip_bench.vlm import llava_prompt as lp

transformers = pytest.importorskip("transformers")

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


@pytest.fixture(scope="module")
def llava():
    from test_vlm_llava import tiny_llava_with_tiny_clip

    vlm, _ = tiny_llava_with_tiny_clip(name="llava")
    return vlm


def test_the_conversation_is_vicuna_v1_with_its_system_sentence():
    # llava/conversation.py conv_vicuna_v1: system, roles USER/ASSISTANT, separators " " and "</s>"
    assert lp.conversation("Provide a short caption for this image.") == (
        f"{SYSTEM} USER: <image>\nProvide a short caption for this image. ASSISTANT:")
    assert lp.conversation("Is it red?", "yes") == f"{SYSTEM} USER: <image>\nIs it red? ASSISTANT: yes</s>"


def test_captioning_and_vqa_messages_follow_the_reference_per_dataset(llava):
    # open_flamingo/eval/models/llava.py get_caption_prompt / get_vqa_prompt
    assert llava.caption_prompt("coco") == "Provide a short caption for this image."
    assert llava.vqa_prompt("What is it?", "vqav2") == "What is it?\nAnswer the question using a single word or phrase."
    assert llava.vqa_prompt("What is it?", "textvqa") == llava.vqa_prompt("What is it?", "vqav2")
    assert llava.vqa_prompt("What is it? ", "vizwiz") == (
        "What is it? \nWhen the provided information is insufficient, respond with 'Unanswerable'."
        "\nAnswer the question using a single word or phrase.")  # the question is not stripped
    # POPE: LLaVA's llava_pope_test.jsonl text is POPE's question plus the short-answer sentence
    assert llava.vqa_prompt("Is there a dog in the image?", "pope") == (
        "Is there a dog in the image?\nAnswer the question using a single word or phrase.")


def test_scienceqa_messages_with_and_without_the_letter_instruction(llava):
    question = "Context: N/A\nQuestion: Which is it?\nOptions: (A) x (B) y"
    assert llava.choice_prompt(question, ("x", "y"), "robustvlm") == question  # bash/eval_scienceqa.sh
    assert llava.choice_prompt(question, ("x", "y"), "llava") == (  # scripts/v1_5/eval/sqa.sh
        question + "\nAnswer with the option's letter from the given choices directly.")


def test_the_tokens_put_one_image_token_per_feature_where_image_was(llava):
    ids = llava._ids(lp.conversation("what shape is it ?"))
    assert ids[0] == llava.tokenizer.bos_token_id and ids.count(llava.tokenizer.bos_token_id) == 1
    assert ids.count(llava.image_token_id) == llava.n_image_tokens == 16
    first = ids.index(llava.image_token_id)
    assert ids[first:first + 16] == [llava.image_token_id] * 16


def test_the_labels_score_the_answer_and_the_end_token(llava):
    # set_inputs: labels masked up to and including "ASSISTANT:", so the answer and "</s>" are scored
    ids, masked = llava.scored_tokens("what shape is it ?", "a red circle")
    tok = llava.tokenizer
    assert tok.convert_ids_to_tokens(ids[masked:]) == ["a", "red", "circle", "</s>"]
    assert tok.convert_ids_to_tokens(ids[masked - 1:masked]) == ["ASSISTANT:"]
    # and the loss is their mean cross-entropy, the end token included
    x = torch.rand(1, 3, 32, 32)
    loss, _ = llava.target_scores(x, ["what shape is it ?"], ["a red circle"])
    batch = torch.tensor([ids])
    logits = llava.model(input_ids=batch, attention_mask=torch.ones_like(batch), pixel_values=llava._pixels(x)).logits
    by_hand = torch.nn.functional.cross_entropy(logits[0, masked - 1:-1].float(), batch[0, masked:])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_images_are_padded_to_a_square_with_the_mean_colour_then_resized(llava):
    # llava/mm_utils.py process_images (image_aspect_ratio "pad"): expand2square(mean * 255, int), then resize
    from simclip_bench.data.vlm_samples import load_image

    assert llava.image_prep("captioning").pad_fill == (122, 116, 104) == llava.image_prep("vqa").pad_fill
    assert llava.image_prep("pope").pad_fill == (122, 116, 104)
    assert llava.image_prep("scienceqa").pad_fill is None  # model_vqa_science.py: image_processor.preprocess only
    wide = np.zeros((16, 32, 3), dtype=np.uint8)
    wide[:, :, 0] = 255  # a red 32x16 image
    x = load_image(wide, 32, (122, 116, 104))
    assert torch.allclose(x[:, 0, 0], torch.tensor([122, 116, 104]) / 255, atol=1e-6)  # top band: the fill
    assert torch.allclose(x[:, 16, 16], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # centre: the image
    cropped = load_image(wide, 32)  # the other path: shorter side resized, centre crop (all red)
    assert torch.allclose(cropped[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_generation_is_greedy_with_the_references_lengths(llava, monkeypatch):
    from simclip_bench.vlm.base import Generation

    assert llava.generation("captioning") == Generation(max_new_tokens=20)  # run_evaluation.py
    assert llava.generation("vqa", "vqav2") == Generation(max_new_tokens=5)
    assert llava.generation("vqa", "textvqa") == Generation(max_new_tokens=10)
    assert llava.generation("pope") == Generation(max_new_tokens=128)  # model_vqa_loader.py
    assert llava.generation("scienceqa") == Generation(max_new_tokens=1024)  # model_vqa_science.py
    seen = {}
    real = llava.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(llava.model, "generate", spy)
    llava.generate_with(torch.rand(1, 3, 32, 32), ["what shape is it ?"], llava.generation("vqa"))
    assert seen["do_sample"] is False and seen["num_beams"] == 1 and seen["max_new_tokens"] == 5
    assert seen["min_new_tokens"] == 0 and "length_penalty" not in seen


def test_the_stop_string_is_stripped():
    assert lp.strip_stop(" Yes</s> ") == "Yes" and lp.strip_stop("a dog </s>") == "a dog"
    assert lp.strip_stop("</s> no") == "</s> no"  # only at the end, as get_outputs does


def test_the_first_targeted_vqa_run_targets_lower_case_maybe():
    # run_evaluation.py evaluate_vqa: ("apgd-maybe", ...), ("apgd-Word", ...); the target is the text after "-"
    from simclip_bench.tasks.vlm_attack import VQA_TARGETS
    from simclip_bench.tasks.vqa import VQATask

    assert VQA_TARGETS == ("maybe", "Word") and VQATask.attack_targets == VQA_TARGETS


def test_answers_and_captions_are_post_processed_as_the_reference_does():
    from simclip_bench.tasks.captioning import postprocess_caption
    from simclip_bench.tasks.vqa import postprocess_vqa_answer

    # vqa_metric.py postprocess_vqa_generation: cut at Question/Answer/Short, then at ", "
    assert postprocess_vqa_answer("two dogs, a cat") == "two dogs"
    assert postprocess_vqa_answer("yes Question: is it") == "yes "
    assert postprocess_vqa_answer("Short answer: red") == ""
    assert postprocess_vqa_answer("first line\nsecond") == "first line\nsecond"  # no cut at a newline
    # coco_metric.py postprocess_captioning_generation, then .replace('"', "")
    assert postprocess_caption('a "red" dog Output: more') == "a red dog "


def test_llava_runs_with_the_224_px_openai_tower_unless_told_otherwise():
    # llava/model/builder.py: pretrained_rob_path='openai' -> the 224-px open_clip ViT-L-14 (non_llava path)
    from simclip_bench.jobs.vlm_eval import VLMEvalRequest, default_encoders

    assert default_encoders(VLMEvalRequest(vlm="llava:some/folder")) == ["ViT-L-14:openai"]


def test_describe_names_every_field_and_enters_the_identity(llava):
    from simclip_bench.vlm.base import vlm_identity

    described = llava.describe()
    assert described["system"] == SYSTEM and described["stop_string"] == "</s>"
    assert described["image_prep"]["captioning"] == {"pad_to_square": True, "pad_fill": [122, 116, 104]}
    assert described["generation"]["vqa"]["max_new_tokens"] == 5
    base = vlm_identity("weights", llava)
    assert vlm_identity("other weights", llava) != base
    original = lp.SYSTEM
    try:
        lp.SYSTEM = "another system sentence"
        assert vlm_identity("weights", llava) != base
    finally:
        lp.SYSTEM = original
