"""sacrebleu scores against several references per sentence."""

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
            result["bleu_ci95"] = summary["confidence_var"]
    return result


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    return BLEU().corpus_score(hypotheses, reference_streams(references)).score


def sentence_scores(hypothesis: str, references: list[str]) -> dict:
    """Sentence BLEU (effective order, so short sentences are not zero) and chrF of one output."""
    return {
        "bleu": BLEU(effective_order=True).sentence_score(hypothesis, references).score,
        "chrf": CHRF().sentence_score(hypothesis, references).score,
    }
