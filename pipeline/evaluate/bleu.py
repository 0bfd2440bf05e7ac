"""sacrebleu scores (its defaults: cased, 13a tokenisation, on text as written) against several references."""

from __future__ import annotations

import json

from sacrebleu.metrics import BLEU, CHRF, TER


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-sentence reference lists -> sacrebleu's streams; None marks a sentence with fewer references."""
    depth = max((len(refs) for refs in references), default=1)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]


def corpus_scores(hypotheses: list[str], references: list[list[str]], n_bootstrap: int = 1000) -> dict:
    """Corpus BLEU (with a bootstrap 95% interval), chrF and TER, each with its signature."""
    streams = reference_streams(references)
    result = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
        score = metric.corpus_score(hypotheses, streams, n_bootstrap=n_bootstrap if name == "bleu" else 1)
        result[name] = score.score
        result[f"{name}_signature"] = signature = str(metric.get_signature())
        if name == "bleu" and n_bootstrap > 1:
            summary = json.loads(score.format(is_json=True, width=2, signature=signature))
            result["bleu_ci95"] = summary.get("confidence_var", 0.0)  # absent when every resample scores 0
    return result


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    return BLEU().corpus_score(hypotheses, reference_streams(references)).score


def sentence_scores(hypothesis: str, references: list[str]) -> dict:
    """Sentence BLEU (effective order, so short sentences are not zero) and chrF of one output."""
    return {
        "bleu": BLEU(effective_order=True).sentence_score(hypothesis, references).score,
        "chrf": CHRF().sentence_score(hypothesis, references).score,
    }


def test_scores(greedy: list[str], beam: list[str], references: list[list[str]]) -> dict:
    """The test scores of a translation run, computed once when it finishes (final.json holds them)."""
    scores = corpus_scores(beam, references)
    lowercase = BLEU(lowercase=True)
    lowercase_bleu = lowercase.corpus_score(beam, reference_streams(references)).score
    return {
        "test_bleu": scores["bleu"],
        "test_bleu_ci95": scores["bleu_ci95"],
        "test_chrf": scores["chrf"],
        "test_ter": scores["ter"],
        "test_greedy_bleu": corpus_bleu(greedy, references),
        "test_bleu_lowercase": lowercase_bleu,
        "bleu_lowercase_signature": str(lowercase.get_signature()),
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
        "ter_signature": scores["ter_signature"],
        "test_sentences": len(references),
        "test_references": sum(len(r) for r in references),
    }


def paired_bleu_difference(a: list[str], b: list[str], references: list[list[str]], n_bootstrap: int = 1000,
                           seed: int = 12345) -> dict:
    """BLEU(a) - BLEU(b) on the same sentences, and the 95% half-width of that difference by paired bootstrap
    (both systems scored on the same resampled sentences, as sacrebleu's paired test does)."""
    import numpy as np

    metric = BLEU()
    streams = reference_streams(references)
    # Sufficient statistics per sentence, the way sacrebleu's own bootstrap resamples them.
    stats_a = np.array(metric._extract_corpus_statistics(a, streams), dtype=float)
    stats_b = np.array(metric._extract_corpus_statistics(b, streams), dtype=float)
    score = lambda stats: metric._compute_score_from_stats(list(stats)).score  # noqa: E731
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(n_bootstrap, len(a)))
    differences = np.array([score(stats_a[i].sum(0)) - score(stats_b[i].sum(0)) for i in draws])
    low, high = np.percentile(differences, [2.5, 97.5])
    difference = score(stats_a.sum(0)) - score(stats_b.sum(0))
    return {"difference": difference, "ci95": float(max(difference - low, high - difference))}


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
