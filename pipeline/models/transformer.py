"""Transformer encoder-decoder (Vaswani et al. 2017) from linear layers, layer norms and softmax."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from pipeline.data.translation import PAD_ID


# ---- masks: True where a query may attend to a key ----------------------------------------------

def padding_mask(tokens: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, T) tokens -> (B, 1, 1, T): every query may see the real tokens only."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(size: int, device=None) -> torch.Tensor:
    """(1, 1, T, T) lower triangle: position t sees positions 0..t, never the future."""
    return torch.tril(torch.ones(size, size, dtype=torch.bool, device=device))[None, None]


def target_mask(tokens: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, 1, T, T): the decoder's self-attention mask, padding and causal combined."""
    return padding_mask(tokens, pad_id) & causal_mask(tokens.size(1), tokens.device)


# ---- primitives ----------------------------------------------------------------------------------

DROPOUT_LEVELS = 32768  # on the CPU a dropout probability is rounded to a multiple of 1 / DROPOUT_LEVELS


class Dropout(nn.Module):
    """Inverted dropout: zero each element with probability p in training, scale the rest by 1 / (1 - p).

    On the CPU torch's own dropout draws one Bernoulli variable at a time, and took a quarter of a
    training step here; this one cuts each random 64-bit word into four 15-bit numbers and compares them
    with p, about twice as fast. Other devices use torch's (their generators are fast)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        cut = round(self.p * DROPOUT_LEVELS)
        if cut >= DROPOUT_LEVELS:
            return torch.zeros_like(x)
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_()  # 63 random bits each
        fifteen_bits = words.view(torch.int16)[: x.numel()] & (DROPOUT_LEVELS - 1)  # uniform on 0..32767
        keep = (fifteen_bits >= cut).view(x.shape)
        return x * keep * (DROPOUT_LEVELS / (DROPOUT_LEVELS - cut))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              dropout: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention; returns (output, weights), weights before dropout."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, heads, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    dropped = dropout(weights) if dropout is not None else weights
    return dropped @ v, weights  # (B, heads, Tq, d_head)


class KVCache:
    """The keys and values one attention module computed in earlier decoding steps, (B, heads, T, d_head) each,
    batch first."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def reorder(self, rows: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, rows), self.v.index_select(0, rows)


class DecodeCache:
    """What Transformer.decode_step keeps between steps: how many positions were decoded and, per decoder layer,
    the self-attention's keys and values of those positions and the cross-attention's of the encoder output
    (computed at the first step). Without the causal mask an earlier position sees the later ones, so nothing
    can be kept but the tokens, and the prefix is decoded again in full. Rows are hypotheses: reorder() keeps
    the prefixes a beam search continues."""

    def __init__(self):
        self.length = 0
        self.tokens: torch.Tensor | None = None
        self.layers: list[tuple[KVCache, KVCache]] = []  # (self-attention, cross-attention) per decoder layer

    def layer(self, i: int) -> tuple[KVCache, KVCache]:
        while len(self.layers) <= i:
            self.layers.append((KVCache(), KVCache()))
        return self.layers[i]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep row rows[j] of every cached tensor as row j (a hypothesis continues the prefix it came from)."""
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, rows)
        for kv_pair in self.layers:
            for kv in kv_pair:
                kv.reorder(rows)


class MultiHeadAttention(nn.Module):
    """Project to heads, attend, concatenate, project back; keeps its last weights when asked (for figures)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        assert d_model % heads == 0, "d_model must be divisible by heads"
        self.heads, self.d_head = heads, d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)
        self.record = False  # set by Transformer.recording_attention()
        self.last_weights: torch.Tensor | None = None  # (B, heads, Tq, Tk), detached

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d_head).transpose(1, 2)  # (B, heads, T, d_head)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, fixed_keys: bool = False) -> torch.Tensor:
        """Attention of the queries over the keys and values. With a cache (decoding, one step at a time): the
        new positions' keys and values are added to the earlier ones' and attended to with them, or, with
        fixed_keys (the encoder output, the same at every step), computed at the first step and reused."""
        q = self._split(self.q_proj(query))
        if cache is not None and fixed_keys and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            k, v = self._split(self.k_proj(key)), self._split(self.v_proj(value))
            if cache is not None:
                if not fixed_keys and cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        out, weights = attention(q, k, v, mask, self.dropout)
        if self.record:
            self.last_weights = weights.detach()
        return self.merge(out)

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """(B, heads, Tq, d_head) -> concatenated heads, projected back: (B, Tq, d_model)."""
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.d_head))


class FeedForward(nn.Module):
    """Position-wise: linear, ReLU, dropout, linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PositionalEncoding(nn.Module):
    """Adds fixed sinusoids: even dimensions sin, odd cos, wavelengths from 2*pi to 10000*2*pi."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 512):
        super().__init__()
        position = torch.arange(max_len)[:, None]
        frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > len(self.table):
            raise ValueError(f"a sequence of {x.size(1)} tokens is longer than the positional table "
                             f"({len(self.table)} positions); shorten it or build the model with more positions")
        return self.dropout(x + self.table[: x.size(1)])


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), so it is not drowned by the positional encoding."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.lookup = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lookup(tokens) * self.scale


# ---- blocks --------------------------------------------------------------------------------------

class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each wrapped as x + dropout(sublayer(LayerNorm(x)))."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, src_mask))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder's output, feed-forward; pre-norm residuals."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, tgt_mask: torch.Tensor | None,
                cache: tuple[KVCache, KVCache] | None = None) -> torch.Tensor:
        """Every target position at once (training, tgt_mask keeping each from the future), or, with this layer's
        cache, the newest positions only (decoding: the earlier ones are in the cache, so no mask is needed)."""
        self_cache, cross_cache = cache if cache is not None else (None, None)
        h = self.norm1(y)
        y = y + self.dropout(self.self_attn(h, h, h, tgt_mask, self_cache))
        y = y + self.dropout(self.cross_attn(self.norm2(y), memory, memory, src_mask, cross_cache, fixed_keys=True))
        return y + self.dropout(self.ff(self.norm3(y)))


# ---- model ---------------------------------------------------------------------------------------

class Transformer(nn.Module):
    """Encoder stack, decoder stack and a generator to target-vocabulary logits."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 256, heads: int = 4, layers: int = 3,
                 d_ff: int = 1024, dropout: float = 0.1, tie_embeddings: bool = True, max_positions: int = 512,
                 causal: bool = True, mask_source_padding: bool = True, shared_embeddings: bool = False):
        super().__init__()
        # The two switches exist for the masking experiment: each removes exactly one mask.
        self.causal, self.mask_source_padding = causal, mask_source_padding
        self.src_embed, self.tgt_embed = Embedding(src_vocab, d_model), Embedding(tgt_vocab, d_model)
        self.positions = PositionalEncoding(d_model, dropout, max_positions)
        self.max_positions = max_positions
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.generator = nn.Linear(d_model, tgt_vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if tie_embeddings:
            # Tied weights see the generator's scale; sqrt(d_model) in Embedding restores the input's.
            self.generator.weight = self.tgt_embed.lookup.weight
        if shared_embeddings:  # one vocabulary for both languages: the source reads with the target's table
            if src_vocab != tgt_vocab:
                raise ValueError(f"shared embeddings need one vocabulary, not {src_vocab} and {tgt_vocab} pieces")
            self.src_embed = self.tgt_embed

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.positions(self.src_embed(src))  # (B, S, d_model)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return self.encoder_norm(x)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, tgt_vocab) for every prefix of tgt."""
        y = self.positions(self.tgt_embed(tgt))  # (B, T, d_model)
        tgt_mask = target_mask(tgt) if self.causal else padding_mask(tgt)
        for layer in self.decoder:
            y = layer(y, memory, src_mask, tgt_mask)
        return self.generator(self.decoder_norm(y))

    def decode_step(self, memory: torch.Tensor, src_mask: torch.Tensor, tokens: torch.Tensor, cache: DecodeCache
                    ) -> torch.Tensor:
        """Logits (B, tgt_vocab) of the token after each prefix, given its newest token (B, 1); `cache` (new at
        the first step) keeps what the earlier tokens left, so a step costs one position, not the whole prefix.
        The layers run the same forward() as in training, with their part of the cache."""
        if not self.causal:
            cache.tokens = tokens if cache.tokens is None else torch.cat([cache.tokens, tokens], dim=1)
            return self.decode(memory, src_mask, cache.tokens)[:, -1]
        position = cache.length
        cache.length += 1
        if position >= self.max_positions:
            raise ValueError(f"position {position} is past the positional table ({self.max_positions} positions)")
        y = self.positions.dropout(self.tgt_embed(tokens) + self.positions.table[position])  # (B, 1, d_model)
        for i, layer in enumerate(self.decoder):
            y = layer(y, memory, src_mask, None, cache.layer(i))
        return self.generator(self.decoder_norm(y))[:, -1]

    def source_mask(self, src: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, S): which source positions attention may see; all of them without the padding mask."""
        mask = padding_mask(src)
        return mask if self.mask_source_padding else torch.ones_like(mask)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        src_mask = self.source_mask(src)
        return self.decode(self.encode(src, src_mask), src_mask, tgt_in)

    @contextmanager
    def recording_attention(self) -> Iterator[Transformer]:
        """Within the block every attention module keeps the weights of its last call; outside, none does."""
        modules = [m for m in self.modules() if isinstance(m, MultiHeadAttention)]
        for m in modules:
            m.record, m.last_weights = True, None
        try:
            yield self
        finally:
            for m in modules:
                m.record = False

    def attention_weights(self) -> dict[str, list[torch.Tensor]]:
        """The weights recorded by the last forward pass inside recording_attention(), by kind, one
        (B, heads, Tq, Tk) per layer."""
        return {
            "encoder_self": [layer.self_attn.last_weights for layer in self.encoder],
            "decoder_self": [layer.self_attn.last_weights for layer in self.decoder],
            "decoder_source": [layer.cross_attn.last_weights for layer in self.decoder],
        }


def make_transformer(src_vocab: int, tgt_vocab: int, d_model: int = 256, heads: int = 4, layers: int = 3,
                     d_ff: int = 1024, dropout: float = 0.1, tie_embeddings: bool = True,
                     max_positions: int = 512, causal: bool = True, mask_source_padding: bool = True,
                     shared_embeddings: bool = False) -> Transformer:
    """An encoder-decoder with `layers` layers on each side."""
    return Transformer(src_vocab, tgt_vocab, d_model, heads, layers, d_ff, dropout, tie_embeddings, max_positions,
                       causal, mask_source_padding, shared_embeddings)
