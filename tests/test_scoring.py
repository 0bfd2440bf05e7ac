"""sacrebleu scoring by the target's language: the tokenizer sacrebleu recommends, named in the signature."""

import pytest

from pipeline.scoring import bleu
from pipeline.scoring.bleu import bleu_tokenizer, signature_tokenizer, words


def test_the_bleu_tokenizer_follows_the_target_language():
    for language in ("English", "Russian", "Greek", "fr", "German"):
        assert bleu_tokenizer(language) == ("13a", "")
    for language in ("Chinese", "zh", "Mandarin"):
        assert bleu_tokenizer(language)[0] == "zh"
    assert bleu_tokenizer("Thai")[0] == "char"
    for language, extra in (("Japanese", "ja"), ("Korean", "ko")):
        tokenizer, note = bleu_tokenizer(language)
        assert tokenizer in (f"{extra}-mecab", "char")
        assert tokenizer != "char" or f"sacrebleu[{extra}]" in note  # the fallback says how to get the real one


def test_a_chinese_target_is_not_scored_with_13a_and_its_signature_says_so():
    references = [["我们是学生。"], ["他很高兴。"], ["你好吗？"]]
    close = ["我们是学生", "他很高", "你好吗？"]
    zh = bleu.test_scores(close, close, references, "zh")
    spaced = bleu.test_scores(close, close, references, "13a")
    assert signature_tokenizer(zh["bleu_signature"]) == "zh" and "tok:zh" in zh["bleu_signature"]
    assert signature_tokenizer(spaced["bleu_signature"]) == "13a"
    # 13a sees each unspaced sentence as one word, so a near miss scores nothing; zh counts the characters.
    assert spaced["test_bleu"] < 40 < zh["test_bleu"]
    assert words("我们是学生。", "zh") == list("我们是学生。")
    assert words("I am here.", "13a") == ["I", "am", "here", "."]


@pytest.mark.parametrize("signature, expected", [("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", "13a"),
                                                 ("nrefs:var|case:mixed|tok:zh|version:2.6.0", "zh"),
                                                 ("", "13a")])
def test_the_tokenizer_is_read_back_from_a_signature(signature, expected):
    assert signature_tokenizer(signature) == expected
