import gzip

import pytest

from pipeline.config import PipelineError
from pipeline.data.translation import (
    CORPUS, SHORT_MAX_WORDS, UNK_ID, Tokenizer, group_key, length_batches, load_pairs, normalize_text, pad_batch,
    read_tsv, split_pairs, with_all_references,
)
from pipeline.scoring.bleu import corpus_bleu, corpus_scores


def test_normalize_matches_the_tutorial_filter():
    assert normalize_text("I'm cold.") == "i m cold ."
    assert normalize_text("  Élodie a mangé, puis dormi!") == "elodie a mange , puis dormi !"


def test_tokenizer_round_trips_text_as_written_in_any_script_without_unk():
    train = ["C'est vous les propriétaires.", "Je suis prêt !", "Il est très fatigué.", "Tu es en retard ?"] * 5
    tokenizer = Tokenizer.train(train, vocab_size=300)
    for text in ["C'est vous les propriétaires.", "Ελληνικά: «ζώα»!", "Это — тест.", "日本語です", "Naïve café"]:
        ids = tokenizer.encode(text)
        assert UNK_ID not in ids and tokenizer.decode(ids) == text
    assert Tokenizer.train(train, vocab_size=300).model_proto == tokenizer.model_proto  # deterministic
    assert Tokenizer(tokenizer.model_proto).encode("Je suis prêt !") == tokenizer.encode("Je suis prêt !")


def test_group_key_joins_near_duplicates():
    assert group_key("I'm ready.") == group_key("I'm ready!") == group_key("  i'M   READY ") == "im ready"
    assert group_key("Élodie est prête.") == group_key("elodie est prete")


def test_near_duplicates_never_straddle_splits():
    pairs = [(f"Je suis prêt {i}.", f"I'm ready {i}.") for i in range(200)]
    pairs += [(f"Je suis prêt {i} !", f"I'm ready {i}!") for i in range(200)]  # same up to punctuation
    pairs += [(f"je suis PRET {i}", f"Ready {i}, I am.") for i in range(0, 200, 3)]  # same source up to case/accents
    splits = split_pairs(pairs, 0.1, 0.1, seed=0)
    keys = [{group_key(s) for s, _ in part} | {"t:" + group_key(t) for _, t in part}
            for part in (splits.train, splits.val, splits.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert splits.test and splits.val


def test_split_keeps_shared_sentences_together():
    pairs = [(f"s{i // 3}", f"t{i // 2}") for i in range(60)] + [(f"x{i}", f"y{i}") for i in range(300)]
    splits = split_pairs(pairs, 0.1, 0.1, seed=0)
    assert sorted(splits.train + splits.val + splits.test) == sorted(pairs)
    for side in (0, 1):
        seen = [{p[side] for p in part} for part in (splits.train, splits.val, splits.test)]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert split_pairs(pairs, 0.1, 0.1, seed=0) == splits


def test_toy_subset_keeps_its_definition_and_its_text_as_written():
    pairs = load_pairs("toy")
    assert 12_000 <= len(pairs) <= 12_800
    starts = ("i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ", "we are", "we re ",
              "they are", "they re ")
    assert all(normalize_text(en).startswith(starts) for _, en in pairs)
    corpus_lines = {line.strip() for line in gzip.open(CORPUS, "rt", encoding="utf-8")}
    assert all(f"{en}\t{fr}" in corpus_lines for fr, en in pairs)  # byte for byte, case and accents kept
    assert any("'" in en for _, en in pairs) and any(c.isupper() for fr, _ in pairs[:50] for c in fr)
    splits = split_pairs(pairs, 0.05, 0.05, seed=0)
    test_keys = {group_key(s) for s, _ in splits.test}
    assert not test_keys & {group_key(s) for s, _ in splits.train}
    sources, references = with_all_references(splits.test)
    assert len(sources) == len({s for s, _ in splits.test}) and sum(map(len, references)) == len(splits.test)


def test_the_long_subset_is_every_pair_the_short_one_leaves_out():
    long = load_pairs("long")
    assert 30_000 <= len(long) <= 40_000
    longest = lambda fr, en: max(len(normalize_text(fr).split()), len(normalize_text(en).split()))  # noqa: E731
    assert all(longest(fr, en) > SHORT_MAX_WORDS for fr, en in long)
    assert max(longest(fr, en) for fr, en in long) > 3 * SHORT_MAX_WORDS


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


def test_over_long_pairs_are_dropped_with_a_count(capsys):
    from pipeline.trained import drop_long

    tokenizer = Tokenizer.train(["un deux trois", "one two three"] * 10, vocab_size=300)
    pairs = [("un deux", "one two"), ("un " * 40, "one"), ("deux", "two " * 41)]
    assert drop_long(pairs, tokenizer, tokenizer, 10, "test") == [("un deux", "one two")]
    assert "dropped 2 of 3 test pairs" in capsys.readouterr().out


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


def test_user_tsv_is_read_as_written(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("Bonjour !\tHello!\nC'est l'été.\tIt's summer.\nBonjour !\tHello!\n", encoding="utf-8")
    assert load_pairs(str(path)) == [("Bonjour !", "Hello!"), ("C'est l'été.", "It's summer.")]
