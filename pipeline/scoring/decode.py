"""Turning source token ids into target token ids: batched greedy decoding and beam search."""

from __future__ import annotations

from typing import Callable

import torch

from pipeline.data.translation import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, pad_batch
from pipeline.models.transformer import DecodeCache, Transformer

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


def step_log_probs(model: Transformer, memory: torch.Tensor, src_mask: torch.Tensor, tokens: torch.Tensor,
                   cache: DecodeCache) -> torch.Tensor:
    """next_log_probs() for the newest token of each prefix (B, 1), the earlier ones kept in `cache`."""
    log_probs = model.decode_step(memory, src_mask, tokens, cache).float().log_softmax(-1)
    log_probs[:, list(NEVER_GENERATED)] = float("-inf")
    return log_probs


@torch.no_grad()
def greedy_decode(model: Transformer, src: torch.Tensor, max_len: int,
                  caps: list[int] | None = None) -> list[list[int]]:
    """The most likely next token at every step, for a padded batch (B, S) at once; row b stops at <eos>, at
    caps[b] tokens, or at max_len. Earlier positions are cached, and the only value read back from the device
    in a step is whether every row has stopped."""
    model.eval()
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    token = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    limits = torch.tensor(caps if caps is not None else [max_len] * src.size(0), device=src.device)
    cache, outputs = DecodeCache(), []
    for step in range(1, min(max_len, max(caps) if caps is not None else max_len) + 1):
        next_token = step_log_probs(model, memory, src_mask, token, cache).argmax(-1)  # (B,)
        next_token = torch.where(done, torch.full_like(next_token, PAD_ID), next_token)
        outputs.append(next_token)
        done |= (next_token == EOS_ID) | (limits <= step)
        token = next_token[:, None]
        if done.all():
            break
    return [_strip(row) for row in torch.stack(outputs, dim=1).tolist()] if outputs else [[] for _ in range(len(src))]


def length_penalty(length, alpha: float):
    """GNMT's ((5 + length) / 6) ** alpha (of a number or a tensor); alpha = 0 leaves scores as summed
    log-probabilities."""
    return ((5 + length) / 6) ** alpha


def best_reachable(score: float, length: int, max_len: int, alpha: float) -> float:
    """The highest normalised score any continuation of a live hypothesis could reach: its summed
    log-probability can only fall, so the bound is `score` at the most favourable length still possible."""
    return max(score / length_penalty(n, alpha) for n in (length + 1, max_len))


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam_size: int, caps: list[int], alpha: float
                ) -> list[tuple[list[int], float]]:
    """For each source sentence of a padded batch (B, S): the best hypothesis by length-normalised
    log-probability, and that score.

    Each sentence keeps beam_size live hypotheses; at every step the 2 x beam_size best continuations of each
    sentence are ranked, those that end (<eos>, or its cap of caps[b] tokens reached) are set aside as
    finished (only the best is kept), and the first beam_size others live on. A sentence stops once no live
    hypothesis can beat its best finished one under the length penalty. Every sentence's hypotheses are
    decoded together, with the earlier positions cached; the only value read back from the device in a step
    is whether every sentence has stopped. reference_beam_search() is the same search, one sentence at a time
    and without a cache."""
    model.eval()
    device, batch, k = src.device, src.size(0), beam_size
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask).repeat_interleave(k, dim=0)  # (B*k, S, d_model)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    limits = torch.tensor(caps, device=device)
    steps = max(caps)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis, <bos>, to start from
    prefixes = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_tokens = torch.full((batch, steps), PAD_ID, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device)
    cache = DecodeCache()
    for step in range(1, steps + 1):
        log_probs = step_log_probs(model, memory, src_mask, prefixes[:, -1:], cache)
        vocab = log_probs.size(-1)
        totals = (scores[:, :, None] + log_probs.view(batch, k, vocab)).view(batch, k * vocab)
        ranked, flat = totals.topk(min(2 * k, k * vocab), dim=1)  # (B, 2k), best first
        beam, token = flat // vocab, flat % vocab
        ends = (token == EOS_ID) | (limits == step)[:, None]
        # The best hypothesis that ends here, if it beats the best that ended before.
        normalised = torch.where(ends & ~done[:, None], ranked / length_penalty(step, alpha),
                                 torch.full_like(ranked, float("-inf")))
        step_best, pick = normalised.max(dim=1)
        better = step_best > best_score
        source = rows * k + beam[rows, pick]
        grown = torch.cat([prefixes[source, 1:], token[rows, pick][:, None]], dim=1)  # (B, step)
        best_tokens[:, :step] = torch.where(better[:, None], grown, best_tokens[:, :step])
        best_score = torch.where(better, step_best, best_score)
        # The first k candidates that do not end live on, in rank order; missing ones are dead (-inf).
        keep = ~ends & (ranked > float("-inf"))
        slot = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(beam, k))
        slot = torch.where(slot < k, slot, torch.full_like(slot, k))  # k: the column of the discarded
        scores = torch.full((batch, k + 1), float("-inf"), device=device).scatter(
            1, slot, torch.where(slot < k, ranked, torch.full_like(ranked, float("-inf"))))[:, :k]
        parent = torch.zeros((batch, k + 1), dtype=torch.long, device=device).scatter(1, slot, beam)[:, :k]
        chosen = torch.full((batch, k + 1), PAD_ID, dtype=torch.long, device=device).scatter(1, slot, token)[:, :k]
        # A sentence stops when no live hypothesis can beat its best finished one.
        reachable = torch.maximum(scores / length_penalty(step + 1, alpha),
                                  scores / length_penalty(limits[:, None].float(), alpha))
        done |= (reachable <= best_score[:, None]).all(dim=1)
        scores = torch.where(done[:, None], torch.full_like(scores, float("-inf")), scores)
        source = (rows[:, None] * k + parent).reshape(-1)
        cache.reorder(source)  # each hypothesis continues the prefix of the beam it came from
        prefixes = torch.cat([prefixes[source], chosen.reshape(-1, 1)], dim=1)
        if done.all():
            break
    return [(_strip(tokens), score) for tokens, score in zip(best_tokens.tolist(), best_score.tolist())]


@torch.no_grad()
def reference_beam_search(model: Transformer, src: torch.Tensor, beam_size: int, max_len: int, alpha: float
                          ) -> tuple[list[int], float]:
    """beam_search() written plainly for one source sentence (1, S), each step decoding every prefix in full:
    the reference the batched search is tested and timed against. Returns the tokens and their score."""
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
    score, tokens = max(finished, key=lambda f: f[0])
    return _strip(tokens[1:]), score


def translate(model: Transformer, sources: list[str], src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int,
              device: torch.device, beam_size: int = 0, alpha: float = 0.6, batch_size: int = 128,
              length_ratio: float = 1.5, length_extra: int = 8, reference: bool = False,
              done: Callable[[int], object] | None = None) -> list[str]:
    """Source sentences as written -> output sentences as written: greedy if beam_size is 0, else beam search,
    batch_size sentences at a time (sorted by length, so batches hold little padding); reference=True beam
    searches with reference_beam_search(), one sentence at a time and uncached, to time the two against
    each other. done(n), if given, is called after each batch of n sentences (a progress bar's update).

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
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    if reference:
        batch_size = 1
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src = pad_batch([encoded[i] for i in chunk], bos_eos=False).to(device)
        chunk_caps = [caps[i] for i in chunk]
        if beam_size and reference:
            decoded = [reference_beam_search(model, src, beam_size, chunk_caps[0], alpha)[0]]
        elif beam_size:
            decoded = [ids for ids, _ in beam_search(model, src, beam_size, chunk_caps, alpha)]
        else:
            decoded = greedy_decode(model, src, max_len, chunk_caps)
        for i, ids in zip(chunk, decoded):
            outputs[i] = ids
        if done:
            done(len(chunk))
    return [tgt_tok.decode(ids) for ids in outputs]
