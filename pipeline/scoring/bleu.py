"""sacrebleu scores (cased, on text as written, the tokenizer sacrebleu recommends for the target language)
against several references, and sacrebleu's paired test of two systems on the same sentences."""

from __future__ import annotations

import json

from sacrebleu.metrics import BLEU, CHRF, TER

# sacrebleu's tokenizer for a target language, by its English name or ISO 639 code: 13a (its default) for
# languages written with spaces between words; for scripts without them, zh for Chinese, MeCab for Japanese
# and Korean (sacrebleu's [ja] and [ko] extras), else characters.
SCRIPT_TOKENIZERS = {
    "zh": ("chinese", "mandarin", "cantonese", "zh", "zho", "chi", "cmn", "yue"),
    "ja-mecab": ("japanese", "ja", "jpn"),
    "ko-mecab": ("korean", "ko", "kor"),
    "char": ("thai", "th", "tha", "lao", "lo", "khmer", "km", "burmese", "myanmar", "my", "tibetan", "bo"),
}


def bleu_tokenizer(language: str) -> tuple[str, str]:
    """sacrebleu's tokenizer for text in `language`, and a note when the recommended one is not installed."""
    name = language.strip().lower()
    chosen = next((tok for tok, names in SCRIPT_TOKENIZERS.items() if name in names), "13a")
    if chosen in ("ja-mecab", "ko-mecab"):
        try:
            BLEU(tokenize=chosen)
        except RuntimeError:
            extra = "ja" if chosen == "ja-mecab" else "ko"
            return "char", (f"note: BLEU on {language} is scored on characters: sacrebleu's {chosen} tokenizer needs "
                            f"`pip install 'sacrebleu[{extra}]'`.")
    return chosen, ""


def signature_tokenizer(signature: str) -> str:
    """The tokenizer a BLEU signature names ("...|tok:zh|..."); 13a for one that names none."""
    return next((part.split(":", 1)[1] for part in signature.split("|") if part.startswith("tok:")), "13a")


def words(text: str, tokenize: str = "13a") -> list[str]:
    """A sentence's tokens as BLEU counts them (length buckets use the same)."""
    return BLEU(tokenize=tokenize).tokenizer(text).split()


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-sentence reference lists -> sacrebleu's streams; None marks a sentence with fewer references."""
    depth = max((len(refs) for refs in references), default=1)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]


def corpus_scores(hypotheses: list[str], references: list[list[str]], n_bootstrap: int = 1000,
                  tokenize: str = "13a") -> dict:
    """Corpus BLEU (with a bootstrap 95% interval), chrF and TER, each with its signature."""
    streams = reference_streams(references)
    result = {}
    asian = tokenize != "13a"  # TER's own tokenizer splits such scripts into characters only when asked
    for name, metric in (("bleu", BLEU(tokenize=tokenize)), ("chrf", CHRF()), ("ter", TER(asian_support=asian))):
        score = metric.corpus_score(hypotheses, streams, n_bootstrap=n_bootstrap if name == "bleu" else 1)
        result[name] = score.score
        result[f"{name}_signature"] = signature = str(metric.get_signature())
        if name == "bleu" and n_bootstrap > 1:
            summary = json.loads(score.format(is_json=True, width=2, signature=signature))
            result["bleu_ci95"] = summary.get("confidence_var", 0.0)  # absent when every resample scores 0
    return result


def corpus_bleu(hypotheses: list[str], references: list[list[str]], tokenize: str = "13a") -> float:
    return BLEU(tokenize=tokenize).corpus_score(hypotheses, reference_streams(references)).score


def sentence_scores(hypothesis: str, references: list[str], tokenize: str = "13a") -> dict:
    """Sentence BLEU (effective order, so short sentences are not zero) and chrF of one output."""
    return {
        "bleu": BLEU(effective_order=True, tokenize=tokenize).sentence_score(hypothesis, references).score,
        "chrf": CHRF().sentence_score(hypothesis, references).score,
    }


def test_scores(greedy: list[str], beam: list[str], references: list[list[str]], tokenize: str = "13a") -> dict:
    """The test scores of a translation run, computed once when it finishes (final.json holds them)."""
    scores = corpus_scores(beam, references, tokenize=tokenize)
    lowercase = BLEU(lowercase=True, tokenize=tokenize)
    lowercase_bleu = lowercase.corpus_score(beam, reference_streams(references)).score
    return {
        "test_bleu": scores["bleu"],
        "test_bleu_ci95": scores["bleu_ci95"],
        "test_chrf": scores["chrf"],
        "test_ter": scores["ter"],
        "test_greedy_bleu": corpus_bleu(greedy, references, tokenize),
        "test_bleu_lowercase": lowercase_bleu,
        "bleu_lowercase_signature": str(lowercase.get_signature()),
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
        "ter_signature": scores["ter_signature"],
        "test_sentences": len(references),
        "test_references": sum(len(r) for r in references),
    }


def paired_bleu(hypotheses_a: list[str], hypotheses_b: list[str], references: list[list[str]],
                resamples: int = 1000, tokenize: str = "13a") -> dict:
    """BLEU of a minus BLEU of b on the same sentences, and sacrebleu's paired bootstrap p-value for it."""
    from sacrebleu.significance import PairedTest

    test = PairedTest([("b", hypotheses_b), ("a", hypotheses_a)], {"BLEU": BLEU(tokenize=tokenize)},
                      reference_streams(references), test_type="bs", n_samples=resamples)
    _, scores = test()
    baseline, other = scores["BLEU"]
    return {"difference": float(other.score - baseline.score), "p_value": float(other.p_value),
            "items": len(references), "resamples": resamples,
            "method": f"sacrebleu's paired bootstrap ({resamples} resamples)"}


def decode_cases(decodes: list[dict], per_case: int) -> list[dict]:
    """The best, typical and worst sentences by sentence BLEU (ties broken by source text), interleaved
    best, typical, worst, best, ... so that any first three show one of each."""
    ranked = sorted(decodes, key=lambda d: (-d["bleu"], d["source"]))
    middle = max(0, len(ranked) // 2 - per_case // 2)
    groups = [("best", ranked[:per_case]), ("typical", ranked[middle:middle + per_case]),
              ("worst", ranked[::-1][:per_case][::-1])]
    picked, seen = [], set()
    for n in range(per_case):
        for case, rows in groups:
            if n < len(rows) and rows[n]["source"] not in seen:
                seen.add(rows[n]["source"])
                picked.append({"case": case, **rows[n]})
    return picked
