"""Turning source token ids into target token ids: batched greedy decoding and beam search."""

from __future__ import annotations

import torch

from pipeline.data.translation import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, pad_batch
from pipeline.models.transformer import Transformer

NEVER_GENERATED = (PAD_ID, BOS_ID, UNK_ID)  # an output is words and one final <eos>


def _strip(ids: list[int]) -> list[int]:
    """Ids before the first <eos>, without padding."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i != PAD_ID:
            out.append(i)
    return out


def next_log_probs(model: Transformer, memory: torch.Tensor, src_mask: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (B, vocab) of the token after each prefix in ys, specials other than <eos> excluded."""
    log_probs = model.decode(memory, src_mask, ys)[:, -1].float().log_softmax(-1)
    log_probs[:, list(NEVER_GENERATED)] = float("-inf")
    return log_probs


@torch.no_grad()
def greedy_decode(model: Transformer, src: torch.Tensor, max_len: int, caps: list[int] | None = None) -> list[list[int]]:
    """The most likely next token at every step, for a padded batch (B, S) at once; row b stops at <eos>, at
    caps[b] tokens, or at max_len."""
    model.eval()
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    ys = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    limits = torch.tensor(caps if caps is not None else [max_len] * src.size(0), device=src.device)
    for step in range(1, min(max_len, int(limits.max())) + 1):
        next_token = next_log_probs(model, memory, src_mask, ys).argmax(-1)  # (B,)
        next_token = torch.where(done, torch.full_like(next_token, PAD_ID), next_token)
        ys = torch.cat([ys, next_token[:, None]], dim=1)
        done |= (next_token == EOS_ID) | (limits <= step)
        if done.all():
            break
    return [_strip(row) for row in ys[:, 1:].tolist()]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6) ** alpha; alpha = 0 leaves scores as summed log-probabilities."""
    return ((5 + length) / 6) ** alpha


def best_reachable(score: float, length: int, max_len: int, alpha: float) -> float:
    """The highest normalised score any continuation of a live hypothesis could reach: its summed
    log-probability can only fall, so the bound is `score` at the most favourable length still possible."""
    return max(score / length_penalty(n, alpha) for n in (length + 1, max_len))


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam_size: int, max_len: int, alpha: float) -> list[int]:
    """The best hypothesis for one source sentence (1, S) by length-normalised log-probability.

    A hypothesis ends with <eos> or is cut at max_len tokens. The search stops once no live hypothesis
    can beat the best finished one under the length penalty, or at max_len."""
    model.eval()
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    alive = [(0.0, [BOS_ID])]  # (summed log-probability, tokens)
    finished: list[tuple[float, list[int]]] = []  # (normalised score, tokens)
    for step in range(1, max_len + 1):
        ys = torch.tensor([tokens for _, tokens in alive], device=src.device)  # (k, step)
        k = len(alive)
        log_probs = next_log_probs(model, memory.expand(k, -1, -1), src_mask.expand(k, -1, -1, -1), ys)
        totals = torch.tensor([score for score, _ in alive], device=src.device)[:, None] + log_probs
        # Twice the beam, so enough candidates stay alive after some of them end.
        best = totals.flatten().topk(min(2 * beam_size, totals.numel()))
        vocab = log_probs.size(-1)
        next_alive = []
        for score, flat in zip(best.values.tolist(), best.indices.tolist()):
            if score == float("-inf"):
                break
            row, token = divmod(flat, vocab)
            tokens = alive[row][1] + [token]
            if token == EOS_ID or step == max_len:
                finished.append((score / length_penalty(step, alpha), tokens))
            elif len(next_alive) < beam_size:
                next_alive.append((score, tokens))
        alive = next_alive
        if not alive:
            break
        leader = max(f[0] for f in finished) if finished else float("-inf")
        if all(best_reachable(score, step, max_len, alpha) <= leader for score, _ in alive):
            break
    return _strip(max(finished, key=lambda f: f[0])[1][1:])


def translate(model: Transformer, sources: list[str], src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int,
              device: torch.device, beam_size: int = 0, alpha: float = 0.6, batch_size: int = 128,
              length_ratio: float = 1.5, length_extra: int = 8) -> list[str]:
    """Source sentences as written -> output sentences as written: greedy if beam_size is 0, else beam search.

    An output is cut at length_ratio x its source's tokens + length_extra, and at max_len. Sources longer than
    the model's positional table are cut to fit, and so is max_len."""
    limit = model.max_positions
    full = [src_tok.encode(s) or [UNK_ID] for s in sources]
    encoded = [ids[:limit] for ids in full]
    cut = sum(len(ids) > limit for ids in full)
    if cut:
        print(f"note: {cut} source sentence(s) longer than the model's {limit} positions were cut to fit.")
    max_len = min(max_len, limit - 1)
    caps = [max(1, min(max_len, int(length_ratio * len(ids)) + length_extra)) for ids in encoded]
    outputs: list[list[int]] = [[] for _ in sources]
    if beam_size:
        for i, ids in enumerate(encoded):
            outputs[i] = beam_search(model, torch.tensor([ids], device=device), beam_size, caps[i], alpha)
    else:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            src = pad_batch([encoded[i] for i in chunk], bos_eos=False).to(device)
            for i, ids in zip(chunk, greedy_decode(model, src, max_len, [caps[i] for i in chunk])):
                outputs[i] = ids
    return [tgt_tok.decode(ids) for ids in outputs]
