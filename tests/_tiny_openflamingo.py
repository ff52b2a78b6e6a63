"""A tiny random OpenFlamingo, built offline: the built-in ``tiny-clip`` tower (open_clip config
``simclip-tiny``), a tiny MPT (the 9B model's language-model family) from ``MptConfig``, a word-level
tokenizer built in memory, cross-attention every 2 of 4 layers, and a small perceiver. ``write_folder``
saves it the way ``--vlm openflamingo:DIR`` reads it: ``checkpoint.pt`` (OpenFlamingo's trainable
weights), ``lm/`` and ``openflamingo.json``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["Output", "Question", "Short", "answer", ":", "a", "red", "blue", "green", "circle", "square", "star",
         "photo", "of", "what", "shape", "is", "it", "color", "?", ".", ",", "maybe", "Word", "yes", "no"]
PERCEIVER = {"depth": 1, "dim_head": 8, "heads": 2, "num_latents": 4}
CROSS_ATTENTION = {"dim_head": 8, "heads": 2}
EVERY = 2


def tiny_tokenizer():
    """A word-level fast tokenizer (punctuation split off) with GPT-NeoX's single end-of-text token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<|endoftext|>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")


def tiny_lm(vocab_size: int):
    from transformers import MptConfig, MptForCausalLM

    torch.manual_seed(0)
    return MptForCausalLM(MptConfig(d_model=32, n_heads=2, n_layers=4, vocab_size=vocab_size, max_seq_len=256,
                                    expansion_ratio=2)).eval()


def tiny_flamingo():
    """(Flamingo with tiny-clip swapped in, its tokenizer with OpenFlamingo's tokens, the tiny-clip load)."""
    from simclip_bench.models.spec import load_model
    from simclip_bench.vlm.openflamingo import END_OF_CHUNK, MEDIA, PAD, Flamingo

    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_CHUNK, MEDIA]})
    tokenizer.add_special_tokens({"pad_token": PAD})
    lm = tiny_lm(len(tokenizer))
    loaded = load_model("tiny-clip", "cpu")
    visual = loaded.model.clip.visual
    torch.manual_seed(1)
    model = Flamingo(visual, lm, tokenizer.encode(MEDIA)[-1], visual.transformer.width, EVERY, PERCEIVER,
                     CROSS_ATTENTION)
    with torch.no_grad():  # open the gates (0 at initialisation) so that the image reaches the text
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(1.0)
    return model, tokenizer, loaded


def write_folder(folder: Path) -> Path:
    """``folder`` as ``--vlm openflamingo:DIR`` reads it (OpenFlamingo's trainable weights in checkpoint.pt)."""
    model, tokenizer, _ = tiny_flamingo()
    folder = Path(folder)
    (folder / "lm").mkdir(parents=True, exist_ok=True)
    tiny_lm(len(tokenizer)).save_pretrained(folder / "lm")  # the same seed and size: the same decoder weights
    tiny_tokenizer().save_pretrained(folder / "lm")
    state = {k: v for k, v in model.state_dict().items()
             if k.startswith("perceiver.") or ".gated_cross_attn_layer." in k or k.endswith("wte.weight")}
    torch.save(state, folder / "checkpoint.pt")
    (folder / "openflamingo.json").write_text(json.dumps({"cross_attn_every_n_layers": EVERY, "perceiver": PERCEIVER,
                                                          "cross_attention": CROSS_ATTENTION}))
    return folder
