"""The Flamingo architecture (Alayrac et al., NeurIPS 2022) as OpenFlamingo builds it (Awadalla et al. 2023,
mlfoundations/open_flamingo ``open_flamingo/src/helpers.py``, ``flamingo_lm.py``), written here so that an
``OpenFlamingo-*.pt`` checkpoint loads by parameter name.

* :class:`PerceiverResampler`: ``num_latents`` learnt latents attend, in ``depth`` layers, to the patch
  tokens of each image together with themselves (keys and values are [tokens; latents]), each layer an
  attention and a feed-forward block with residuals; a final layer norm. OpenFlamingo-9B: width 1024 (the
  ViT-L/14 tokens), depth 6, 8 heads of 64, 64 latents, feed-forward ×4; no time or frame embeddings.
* :class:`GatedCrossAttentionBlock`: text tokens attend to the latents of the image they follow -- the
  last ``<image>`` token at or before them (``only_attend_immediate_media``); text before any image gets
  nothing -- then a feed-forward block; each added through ``tanh`` of a learnt gate (0 at initialisation).
* :class:`FlamingoLayer`: a gated cross-attention block (in front of every ``cross_attn_every_n_layers``-th
  decoder layer, the layers with ``(i + 1) % n == 0``) followed by the language model's own decoder layer.

Which image each text token sees is decided by :class:`MediaState`, shared by all layers: the positions of
the ``<image>`` tokens of the current input, or, while generating token by token, the number of images of
the prompt (every new token follows the last image). Layer norms have biases; linear maps have none.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm, Linear(dim, mult·dim), GELU, Linear(mult·dim, dim) (indices 0, 1, 3 hold weights)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., n, heads·d) -> (..., heads, n, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention (max-subtracted); ``allowed`` masks keys out with the dtype's lowest value."""
    sim = (q * scale) @ k.transpose(-1, -2)
    if allowed is not None:
        sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    return sim.softmax(dim=-1) @ v


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """media (b, T, n1, D), latents (b, T, n2, D) -> (b, T, n2, D)."""
        media, latents = self.norm_media(media), self.norm_latents(latents)
        k, v = self.to_kv(torch.cat([media, latents], dim=-2)).chunk(2, dim=-1)
        q, k, v = (_heads(t, self.heads) for t in (self.to_q(latents), k, v))
        return self.to_out(_attend(q, k, v, self.scale).transpose(-3, -2).flatten(-2))


class PerceiverResampler(nn.Module):
    """Image tokens (b, T, F, v, D) -> ``num_latents`` latents per image (b, T, num_latents, D)."""

    def __init__(self, dim: int, depth: int = 6, dim_head: int = 64, heads: int = 8, num_latents: int = 64,
                 ff_mult: int = 4) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList([nn.ModuleList([PerceiverAttention(dim, dim_head, heads),
                                                    feed_forward(dim, ff_mult)]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = x.flatten(2, 3)  # frames and tokens of one image together
        latents = self.latents.expand(b, t, *self.latents.shape)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim: int, dim_visual: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, media: torch.Tensor, text_time: torch.Tensor) -> torch.Tensor:
        """x (B, T_txt, D), media (B, T_img, n, D_v), text_time (B, T_txt): the 1-based index of the image each
        text token follows (0: none)."""
        n_img, n = media.shape[1], media.shape[2]
        k, v = self.to_kv(media.flatten(1, 2)).chunk(2, dim=-1)
        q, k, v = (_heads(t, self.heads) for t in (self.to_q(self.norm(x)), k, v))
        media_time = torch.arange(1, n_img + 1, device=x.device).repeat_interleave(n)
        allowed = (text_time[:, None, :, None] == media_time[None, None, None, :])
        out = _attend(q, k, v, self.scale, allowed)
        out = out.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        return self.to_out(out.transpose(-3, -2).flatten(-2))


class GatedCrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, dim_visual: int, dim_head: int = 64, heads: int = 8, ff_mult: int = 4) -> None:
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, dim_head, heads)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x: torch.Tensor, media: torch.Tensor, text_time: torch.Tensor) -> torch.Tensor:
        x = self.attn(x, media, text_time) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x


@dataclass
class MediaState:
    """What every :class:`FlamingoLayer` reads: the image latents (B, T_img, n, D) and, per text token, the
    image it follows. :meth:`observe` sees each language-model call's ``input_ids`` first."""

    media_token_id: int
    latents: torch.Tensor | None = None
    text_time: torch.Tensor | None = None
    images_in_prompt: torch.Tensor | None = field(default=None)

    def observe(self, input_ids: torch.Tensor) -> None:
        """A call with ``<image>`` tokens sets each token's image (cumulative count); a call without them (a
        generation step after the prompt) puts every token after the prompt's last image."""
        is_media = input_ids == self.media_token_id
        if bool(is_media.any()) or self.images_in_prompt is None:
            self.text_time = is_media.cumsum(dim=-1)
            self.images_in_prompt = is_media.sum(dim=-1)
        else:
            self.text_time = self.images_in_prompt[:, None].expand(-1, input_ids.shape[1])

    def clear(self) -> None:
        self.latents = self.text_time = self.images_in_prompt = None


class FlamingoLayer(nn.Module):
    """A decoder layer of the language model, with a gated cross-attention block in front (or none)."""

    def __init__(self, gated_cross_attn_layer: GatedCrossAttentionBlock | None, decoder_layer: nn.Module,
                 state: MediaState) -> None:
        super().__init__()
        self.gated_cross_attn_layer = gated_cross_attn_layer
        self.decoder_layer = decoder_layer
        self._state = state  # shared, not a submodule

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # attributes the language model reads from its layers (e.g. attention_type)
            return getattr(super().__getattr__("decoder_layer"), name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.gated_cross_attn_layer is not None:
            state = self._state
            if state.latents is None or state.text_time is None:
                raise RuntimeError("the Flamingo layers are not conditioned on images")
            hidden_states = self.gated_cross_attn_layer(hidden_states, state.latents.to(hidden_states.dtype),
                                                        state.text_time[:, -hidden_states.shape[1]:])
        return self.decoder_layer(hidden_states, *args, **kwargs)
