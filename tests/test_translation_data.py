import gzip

import pytest

from pipeline.config import PipelineError
from pipeline.data.translation import (
    Vocab, detokenize, length_batches, load_pairs, normalize, pad_batch, read_tsv, split_pairs, tokenize,
    with_all_references, UNK_ID,
)
from pipeline.evaluate.bleu import corpus_bleu, corpus_scores


def test_normalize_matches_the_tutorial_filter():
    assert normalize("I'm cold.") == "i m cold ."
    assert normalize("  Élodie a mangé, puis dormi!") == "elodie a mange , puis dormi !"


@pytest.mark.parametrize("text", ["i m cold .", "elle a , dit il , faim !", "tu vas bien ?"])
def test_tokenize_detokenize_round_trip(text):
    assert detokenize(tokenize(text)) == detokenize(text.split())
    assert tokenize(detokenize(tokenize(text))) == tokenize(text)


def test_split_keeps_shared_sentences_together():
    pairs = [(f"s{i // 3}", f"t{i // 2}") for i in range(60)] + [(f"x{i}", f"y{i}") for i in range(300)]
    splits = split_pairs(pairs, 0.1, 0.1, seed=0)
    assert sorted(splits.train + splits.val + splits.test) == sorted(pairs)
    for side in (0, 1):
        seen = [{p[side] for p in part} for part in (splits.train, splits.val, splits.test)]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert split_pairs(pairs, 0.1, 0.1, seed=0) == splits


def test_toy_subset_has_the_classic_size_and_no_leaks():
    pairs = load_pairs("toy")
    assert 12_000 <= len(pairs) <= 12_600
    splits = split_pairs(pairs, 0.05, 0.05, seed=0)
    test_sources = {s for s, _ in splits.test}
    assert not test_sources & {s for s, _ in splits.train}
    sources, references = with_all_references(splits.test)
    assert len(sources) == len(test_sources) and sum(map(len, references)) == len(splits.test)
    # References read like the model's detokenised outputs: punctuation attached, as in ordinary text.
    assert all(" ." not in r and " !" not in r and " ?" not in r for refs in references for r in refs)


def test_vocab_min_freq_and_specials():
    vocab = Vocab.build(["a b b", "b c"], min_freq=2)
    assert vocab.itos[:5] == ["<pad>", "<bos>", "<eos>", "<unk>", "b"]
    assert vocab.encode("a b") == [UNK_ID, 4]
    assert vocab.decode([1, 4, 2, 4]) == ["b"]


def test_length_batches_padded_tensors_stay_within_the_budget_and_cover_everything():
    import random

    import torch

    rng = random.Random(0)
    pairs = [([4] * rng.randint(1, 25), [5] * rng.randint(1, 25)) for _ in range(600)]
    lengths = [(len(s), len(t)) for s, t in pairs]
    for budget in (60, 200, 1000):
        batches = length_batches(lengths, budget, torch.Generator().manual_seed(0))
        assert sorted(i for b in batches for i in b) == list(range(600))
        for b in batches:
            src = pad_batch([pairs[i][0] for i in b], bos_eos=False)
            tgt = pad_batch([pairs[i][1] for i in b], bos_eos=True)
            assert src.numel() + tgt.numel() <= budget or len(b) == 1, (budget, src.shape, tgt.shape)


def test_over_long_pairs_are_dropped_at_load_time_with_a_count(tmp_path, capsys):
    path = tmp_path / "c.tsv"
    path.write_text("un deux\tone two\n" + "mot " * 40 + "\tword\nsalut\t" + "hi " * 41 + "\n", encoding="utf-8")
    assert load_pairs(str(path), max_tokens=10) == [("un deux", "one two")]
    assert "dropped 2 of 3 pairs" in capsys.readouterr().out


def test_bleu_of_references_against_themselves_is_100():
    refs = [["the cat sat on the mat."], ["i am here."], ["he is tall and very strong."]]
    assert corpus_bleu([r[0] for r in refs], refs) == pytest.approx(100)


def test_multi_reference_scoring_uses_every_reference():
    hyps = ["he is very tall now.", "we are all here today."]
    single = [["he is quite tall at last."], ["they stay here tomorrow."]]
    multi = [["he is quite tall at last.", "he is very tall now."],
             ["they stay here tomorrow."]]
    assert corpus_bleu(hyps, multi) > corpus_bleu(hyps, single)
    both = [[r[0], h] for r, h in zip(single, hyps)]
    scores = corpus_scores(hyps, both, n_bootstrap=50)
    assert scores["bleu"] == pytest.approx(100) and "nrefs:2" in scores["bleu_signature"]
    assert scores["chrf"] == pytest.approx(100) and scores["ter"] == pytest.approx(0)


def test_missing_corpus_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_pairs(str(tmp_path / "nope.tsv"))


def test_line_without_a_tab_names_file_and_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("bonjour\thello\nsalut hi\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"c\.tsv, line 2: expected source<TAB>target"):
        read_tsv(path, 0, 1)


def test_empty_corpus(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="holds no sentence pairs"):
        load_pairs(str(path))


def test_wrong_encoding_names_file_and_line(tmp_path):
    path = tmp_path / "c.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write("un\tone\n".encode() + "d\xe9j\xe0\talready\n".encode("latin-1"))
    with pytest.raises(PipelineError, match=r"c\.tsv\.gz, line 2: not valid UTF-8"):
        read_tsv(path, 0, 1)


def test_user_tsv_is_normalised(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("Bonjour !\tHello!\nMerci.\tThanks.\n", encoding="utf-8")
    assert load_pairs(str(path)) == [("bonjour !", "hello !"), ("merci .", "thanks .")]
