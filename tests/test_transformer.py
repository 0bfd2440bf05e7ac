import pytest
import torch

from pipeline.data.translation import BOS_ID, EOS_ID, PAD_ID
from pipeline.scoring.decode import beam_search, greedy_decode, reference_beam_search
from pipeline.models.transformer import (
    DROPOUT_LEVELS, Dropout, attention, causal_mask, make_transformer, padding_mask, target_mask,
)


def tiny(**kw):
    torch.manual_seed(0)
    return make_transformer(20, 22, d_model=32, heads=4, layers=2, d_ff=64, dropout=0.0, **kw).eval()


def test_shapes_through_every_layer():
    model = tiny()
    src, tgt = torch.randint(4, 20, (3, 7)), torch.randint(4, 22, (3, 5))
    src_mask = padding_mask(src)
    with model.recording_attention():
        memory = model.encode(src, src_mask)
        assert memory.shape == (3, 7, 32)
        assert model.decode(memory, src_mask, tgt).shape == (3, 5, 22)
        weights = model.attention_weights()
    assert [w.shape for w in weights["encoder_self"]] == [(3, 4, 7, 7)] * 2
    assert [w.shape for w in weights["decoder_self"]] == [(3, 4, 5, 5)] * 2
    assert [w.shape for w in weights["decoder_source"]] == [(3, 4, 5, 7)] * 2


def test_attention_weights_sum_to_one_and_respect_the_mask():
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[:, :, :, 4:] = False
    out, weights = attention(q, k, v, mask)
    assert out.shape == (2, 3, 4, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 4))
    assert weights[..., 4:].abs().max() == 0


def test_masks():
    tokens = torch.tensor([[5, 6, PAD_ID]])
    assert padding_mask(tokens).tolist() == [[[[True, True, False]]]]
    assert causal_mask(3)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert target_mask(tokens)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_future_target_tokens_do_not_change_earlier_outputs():
    model = tiny()
    src, tgt = torch.randint(4, 20, (2, 6)), torch.randint(4, 22, (2, 6))
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 4) % 18 + 4
    a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_changes_nothing_for_real_tokens():
    model = tiny()
    src, tgt = torch.randint(4, 20, (1, 5)), torch.randint(4, 22, (1, 4))
    padded_src = torch.cat([src, torch.full((1, 3), PAD_ID)], 1)
    padded_tgt = torch.cat([tgt, torch.full((1, 2), PAD_ID)], 1)
    torch.testing.assert_close(model(src, tgt), model(padded_src, padded_tgt)[:, :4])


def test_tied_embeddings_share_one_tensor():
    model = tiny(tie_embeddings=True)
    assert model.generator.weight is model.tgt_embed.lookup.weight


def _reverse_task(n, generator):
    lengths = torch.randint(3, 7, (n,), generator=generator)
    rows = [torch.randint(4, 14, (int(n),), generator=generator).tolist() for n in lengths]
    return rows, [list(reversed(r)) for r in rows]


def test_learns_to_reverse_tiny_sequences_and_beam_of_one_equals_greedy():
    from pipeline.data.translation import pad_batch

    torch.manual_seed(0)
    model = make_transformer(14, 14, d_model=64, heads=4, layers=2, d_ff=128, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(500):
        sources, targets = _reverse_task(32, generator)
        src, tgt = pad_batch(sources, bos_eos=False), pad_batch(targets, bos_eos=True)
        loss = torch.nn.functional.cross_entropy(model(src, tgt[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(),
                                                 ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sources, targets = _reverse_task(16, torch.Generator().manual_seed(99))
    decoded = greedy_decode(model, pad_batch(sources, bos_eos=False), max_len=10)
    correct = sum(d == t for d, t in zip(decoded, targets))
    assert correct >= 14, (correct, decoded[:3], targets[:3])
    for source in sources[:6]:
        src = torch.tensor([source])
        assert reference_beam_search(model, src, beam_size=1, max_len=10, alpha=0.6)[0] == \
            greedy_decode(model, src, 10)[0]
    assert BOS_ID not in decoded[0] and EOS_ID not in decoded[0]
    # The batched, cached beam search finds what the plain one-sentence search finds, on a padded batch, and
    # each sentence decodes as it decodes alone.
    caps = [len(s) + 3 for s in sources]
    for beam in (1, 3):
        batched = beam_search(model, pad_batch(sources, bos_eos=False), beam, caps, alpha=0.6)
        for source, cap, (tokens, score) in zip(sources, caps, batched):
            reference_tokens, reference_score = reference_beam_search(model, torch.tensor([source]), beam, cap, 0.6)
            assert tokens == reference_tokens and score == pytest.approx(reference_score, abs=1e-4)
            assert beam_search(model, torch.tensor([source]), beam, [cap], 0.6)[0][0] == tokens
    assert [t for t, _ in beam_search(model, pad_batch(sources, bos_eos=False), 1, caps, 0.6)] == \
        greedy_decode(model, pad_batch(sources, bos_eos=False), 10, caps)


def test_attention_weights_are_kept_only_when_asked():
    model = tiny()
    model.train()
    src, tgt = torch.randint(4, 20, (2, 5)), torch.randint(4, 22, (2, 4))
    model(src, tgt).sum().backward()
    assert all(w is None for ws in model.attention_weights().values() for w in ws)
    with torch.no_grad(), model.recording_attention():
        model(src, tgt)
        assert all(w is not None for ws in model.attention_weights().values() for w in ws)
    model(src, tgt)  # outside the block again: nothing new is kept
    modules = [m for m in model.modules() if hasattr(m, "record")]
    assert modules and not any(m.record for m in modules)


def _exhaustive_best(model, src, max_len, alpha):
    """The best output over every sequence that ends in <eos> or is cut at max_len: the search beam
    search approximates, done in full on a vocabulary small enough to enumerate."""
    from pipeline.scoring.decode import length_penalty, next_log_probs

    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    best = (float("-inf"), None)
    frontier = [(0.0, [BOS_ID])]
    for step in range(1, max_len + 1):
        ys = torch.tensor([tokens for _, tokens in frontier])
        log_probs = next_log_probs(model, memory.expand(len(frontier), -1, -1),
                                   src_mask.expand(len(frontier), -1, -1, -1), ys)
        grown = []
        for (score, tokens), row in zip(frontier, log_probs.tolist()):
            for token, lp in enumerate(row):
                if lp == float("-inf"):
                    continue
                if token == EOS_ID or step == max_len:
                    normalised = (score + lp) / length_penalty(step, alpha)
                    if normalised > best[0]:
                        best = (normalised, [t for t in tokens[1:] + [token] if t != EOS_ID])
                else:
                    grown.append((score + lp, tokens + [token]))
        frontier = grown
    return best[1]


class LastTokenTable(torch.nn.Module):
    """A stand-in decoder whose next-token probabilities depend on the last token only, through a table:
    a case built so that the answer is known."""

    def __init__(self, table: dict[int, list[float]]):
        super().__init__()
        self.table = table
        self.max_positions = 64

    def source_mask(self, src):
        return torch.ones(src.size(0), 1, 1, src.size(1), dtype=torch.bool)

    def encode(self, src, src_mask):
        return torch.zeros(src.size(0), src.size(1), 1)

    def decode(self, memory, src_mask, ys):
        rows = torch.tensor([self.table[t] for t in ys[:, -1].tolist()]).log()  # (B, vocab)
        return rows[:, None, :].expand(-1, ys.size(1), -1)

    def decode_step(self, memory, src_mask, tokens, cache):
        return torch.tensor([self.table.get(t, self.table[BOS_ID]) for t in tokens[:, -1].tolist()]).log()


@torch.no_grad()
def test_beam_search_does_not_stop_while_a_live_hypothesis_can_still_win():
    # <eos> is likely at once, but after "a" another "a" is almost certain: with a strong length penalty
    # (alpha 2) the long "a a a a a a a a" wins, though many short hypotheses finish first.
    eos, a, b = EOS_ID, 4, 5
    table = {BOS_ID: [0, 0, 0.5, 0, 0.45, 0.05], a: [0, 0, 0.01, 0, 0.98, 0.01], b: [0, 0, 0.5, 0, 0.25, 0.25]}
    model, src = LastTokenTable(table), torch.tensor([[4, 5]])
    assert _exhaustive_best(model, src, 8, alpha=2.0) == [a] * 8
    for search in (lambda k, alpha: reference_beam_search(model, src, k, 8, alpha)[0],
                   lambda k, alpha: beam_search(model, src, k, [8], alpha)[0][0]):
        assert search(2, 2.0) == [a] * 8
        assert search(2, 0.0) == []  # no penalty: <eos> at once wins
        assert eos not in search(3, 1.0)


@torch.no_grad()
def test_a_beam_wider_than_every_hypothesis_finds_what_exhaustive_search_finds():
    for seed in range(10):
        torch.manual_seed(seed)
        model = make_transformer(6, 7, d_model=16, heads=2, layers=1, d_ff=32, dropout=0.0).eval()
        src = torch.randint(4, 6, (1, 4))
        for alpha in (0.0, 0.6, 1.5):
            best = _exhaustive_best(model, src, 4, alpha)
            assert reference_beam_search(model, src, 500, 4, alpha)[0] == best, (seed, alpha)
            assert beam_search(model, src, 500, [4], alpha)[0][0] == best, (seed, alpha)


def test_decoding_an_input_longer_than_the_positional_table_is_guarded(capsys):
    from pipeline.data.translation import Tokenizer
    from pipeline.scoring.decode import translate

    tokenizer = Tokenizer.train(["a b c d e f"] * 20, vocab_size=270)
    torch.manual_seed(0)
    model = make_transformer(len(tokenizer), len(tokenizer), d_model=16, heads=2, layers=1, d_ff=32, dropout=0.0,
                             max_positions=8).eval()
    out = translate(model, ["a b c d e f a b c d e f", "a b"], tokenizer, tokenizer, max_len=20,
                    device=torch.device("cpu"), beam_size=2)
    assert len(out) == 2 and "1 source sentence(s) longer" in capsys.readouterr().out
    assert all(isinstance(o, str) for o in out)


def _masks_seen(model, src, tgt, monkeypatch):
    """The masks handed to attention in one forward pass: encoder self, decoder self, decoder-source."""
    from pipeline.models import transformer

    seen, real = [], transformer.attention

    def spy(q, k, v, mask=None, dropout=None):
        seen.append(mask.expand(q.size(0), 1, q.size(2), k.size(2)).clone())
        return real(q, k, v, mask, dropout)

    monkeypatch.setattr(transformer, "attention", spy)
    model(src, tgt)
    return seen


@pytest.mark.parametrize("causal, source_padding", [(False, True), (True, False), (False, False)])
def test_each_mask_switch_removes_exactly_its_mask(causal, source_padding, monkeypatch):
    src = torch.tensor([[5, 6, 7, PAD_ID], [5, PAD_ID, PAD_ID, PAD_ID]])
    tgt = torch.tensor([[1, 8, 9, PAD_ID], [1, 8, PAD_ID, PAD_ID]])
    # Calls in order: encoder layers 1 and 2, then decoder self and decoder-source for each decoder layer.
    encoder, _, decoder_self, cross = _masks_seen(tiny(), src, tgt, monkeypatch)[:4]
    switched = _masks_seen(tiny(causal=causal, mask_source_padding=source_padding), src, tgt, monkeypatch)
    s_encoder, _, s_decoder_self, s_cross = switched[:4]
    all_true = lambda m: bool(m.all())  # noqa: E731
    if source_padding:
        assert torch.equal(s_encoder, encoder) and torch.equal(s_cross, cross)
    else:
        assert all_true(s_encoder) and all_true(s_cross) and not all_true(encoder)
    if causal:
        assert torch.equal(s_decoder_self, decoder_self)
    else:  # only the target padding is left: every real query sees every real key, future included
        expected = padding_mask(tgt).expand(2, 1, 4, 4)
        assert torch.equal(s_decoder_self, expected) and not torch.equal(decoder_self, expected)


@torch.no_grad()
def test_without_the_causal_mask_the_batched_search_decodes_each_prefix_in_full_and_still_agrees():
    """An earlier position of a non-causal decoder sees the later ones, so no cache can hold it: the batched
    search falls back to decoding each prefix in full, and still finds what the reference finds."""
    from pipeline.data.translation import pad_batch

    torch.manual_seed(3)
    model = make_transformer(20, 20, d_model=16, heads=2, layers=2, d_ff=32, dropout=0.0, causal=False).eval()
    sources = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]
    batched = beam_search(model, pad_batch(sources, bos_eos=False), 3, [6, 6, 6], 0.6)
    for source, (tokens, score) in zip(sources, batched):
        reference = reference_beam_search(model, torch.tensor([source]), 3, 6, 0.6)
        assert tokens == reference[0] and score == pytest.approx(reference[1], abs=1e-4)


def test_shared_embeddings_are_one_table_and_need_one_vocabulary():
    model = make_transformer(20, 20, d_model=16, heads=2, layers=1, d_ff=32, shared_embeddings=True)
    assert model.src_embed.lookup.weight is model.tgt_embed.lookup.weight is model.generator.weight
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in make_transformer(
        20, 20, d_model=16, heads=2, layers=1, d_ff=32).parameters())
    with pytest.raises(ValueError, match="one vocabulary"):
        make_transformer(20, 22, d_model=16, heads=2, layers=1, d_ff=32, shared_embeddings=True)


def test_dropout_zeroes_its_share_at_every_position_scales_the_rest_and_is_off_in_evaluation():
    n, p = 400_000, 0.1
    cut = round(p * DROPOUT_LEVELS)
    drop = Dropout(p)
    torch.manual_seed(0)
    x = torch.ones(n, requires_grad=True)
    y = drop(x)
    # Each of the four 15-bit slices of a random word zeroes its own elements at rate p (within 5 binomial sds).
    sd = (p * (1 - p) / (n / 4)) ** 0.5
    for offset in range(4):
        assert (y[offset::4] == 0).float().mean().item() == pytest.approx(p, abs=5 * sd), offset
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, DROPOUT_LEVELS / (DROPOUT_LEVELS - cut)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient flows through the kept elements, scaled alike
    torch.manual_seed(0)
    assert torch.equal(drop(torch.ones(n)), y.detach())  # one seed, one mask
    assert not torch.equal(drop(torch.ones(n)), drop(torch.ones(n)))  # a new mask per call
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0)(x) is x and not Dropout(1.0)(x).any()


@torch.no_grad()
def test_a_cached_step_gives_the_logits_of_the_whole_prefix_decoded_again():
    """decode_step runs the layers' one forward() on the newest position with the others' keys and values from
    the cache; it must give what decoding the whole prefix gives, step after step, also after a reorder."""
    from pipeline.models.transformer import DecodeCache

    torch.manual_seed(0)
    model = make_transformer(9, 11, d_model=16, heads=2, layers=2, d_ff=32, dropout=0.1).eval()
    src = torch.randint(4, 9, (3, 5))
    src_mask = model.source_mask(src)
    memory = model.encode(src, src_mask)
    prefix = torch.full((3, 1), BOS_ID)
    cache = DecodeCache()
    for _ in range(6):
        step = model.decode_step(memory, src_mask, prefix[:, -1:], cache)
        torch.testing.assert_close(step, model.decode(memory, src_mask, prefix)[:, -1], rtol=1e-5, atol=1e-5)
        rows = torch.tensor([2, 0, 1])  # as a beam search would, continuing other rows' prefixes
        cache.reorder(rows)
        memory, src_mask = memory[rows], src_mask[rows]
        prefix = torch.cat([prefix[rows], step[rows].argmax(-1, keepdim=True)], dim=1)
    assert cache.length == 6 and cache.layers[0][0].k.shape == (3, 2, 6, 8)
