"""Evaluate a Transformer run: decodes, scores, attention weights and masks, metrics.json."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import FINAL, MAIN_RUN, TARGETS, TEST_OUTPUTS, Paths
from pipeline.data.translation import BOS_ID, SUBSETS, pad_batch
from pipeline.evaluate import run_summary
from pipeline.scoring.bleu import bleu_tokenizer, corpus_scores, decode_cases, paired_bleu, sentence_scores, \
    signature_tokenizer, words
from pipeline.io import read_json, record_timing, save_arrays, write_json
from pipeline.models.transformer import Transformer, causal_mask, padding_mask, target_mask
from pipeline.trained import load_trained

ATTENTION_PER_CASE = 2  # test sentences per case (best, typical, worst) whose attention is kept
ATTENTION_WORDS = (3, 12)  # source length (words) of those sentences: long enough to show, short enough to read
MASK_BATCH = 4  # sentences in the batch whose masks are drawn
LENGTH_BUCKETS = [(1, 3), (4, 5), (6, 7), (8, 9), (10, 99)]  # source length in words (spaces), inclusive
SEED = 0


def attention_for(model: Transformer, src_ids: list[int], out_ids: list[int]) -> dict[str, np.ndarray]:
    """Every attention map while the model re-reads its own translation: kind -> (layers, heads, Tq, Tk)."""
    model.eval()
    src = torch.tensor([src_ids])
    tgt_in = torch.tensor([[BOS_ID, *out_ids]])
    with torch.no_grad(), model.recording_attention():
        model(src, tgt_in)
        return {kind: torch.stack([w[0] for w in weights]).float().numpy()
                for kind, weights in model.attention_weights().items()}


def mask_batch(src_rows: list[list[int]], tgt_rows: list[list[int]]) -> dict[str, np.ndarray]:
    """The masks the model builds for one real batch, as boolean arrays."""
    src, tgt = pad_batch(src_rows, bos_eos=False), pad_batch(tgt_rows, bos_eos=True)[:, :-1]
    return {
        "src": src.numpy(),
        "tgt": tgt.numpy(),
        "source_padding": padding_mask(src)[:, 0, 0].numpy(),  # (B, S)
        "target_padding": padding_mask(tgt)[:, 0, 0].numpy(),  # (B, T)
        "causal": causal_mask(tgt.size(1))[0, 0].numpy(),  # (T, T)
        "target": target_mask(tgt)[:, 0].numpy(),  # (B, T, T)
    }


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[list[str]], tokenize: str,
                   source_tokenize: str) -> list[dict]:
    """Corpus BLEU per source-length bucket (lengths in BLEU's tokens of the source language), with the
    bootstrap 95% interval and the sentence count: every bucket that has sentences."""
    lengths = [len(words(s, source_tokenize)) for s in sources]
    rows = []
    for low, high in LENGTH_BUCKETS:
        idx = [i for i, n in enumerate(lengths) if low <= n <= high]
        if idx:
            scores = corpus_scores([hypotheses[i] for i in idx], [references[i] for i in idx], tokenize=tokenize)
            rows.append({"bucket": f"{low}–{high}" if high < 99 else f"{low}+", "sentences": len(idx),
                         "bleu": scores["bleu"], "bleu_ci95": scores["bleu_ci95"]})
    return rows


def length_trend(sources: list[str], decodes: list[dict], source_tokenize: str) -> dict:
    """Does quality fall (or rise) with the source's length? Spearman's rank correlation of each sentence's
    source length with its sentence chrF (scipy.stats), over every test sentence: one test, not a best
    bucket against a worst one picked after seeing the scores. The comparison stage words it."""
    from scipy import stats

    lengths = [len(words(s, source_tokenize)) for s in sources]
    result = stats.spearmanr(lengths, [d["chrf"] for d in decodes])
    rho = float(result.statistic) if np.isfinite(result.statistic) else 0.0
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    return {"rho": rho, "p_value": p, "sentences": len(sources), "score": "sentence chrF"}


def evaluate_mt(paths: Paths, name: str = MAIN_RUN) -> dict:
    """Read runs/mt/<name>, write its eval/* and site_assets/mt/metrics.json; return the metrics."""
    t0 = time.perf_counter()
    run_dir = paths.run("mt", name)
    out_dir = run_dir / "eval"
    final = read_json(run_dir / FINAL, "test result of the run (unfinished? make train-mt resumes it)")
    outputs = read_json(run_dir / f"{TEST_OUTPUTS}.json", "test decodes of the run")
    config, model, src_tok, tgt_tok = load_trained(run_dir, torch.device("cpu"))
    sources = [d["source"] for d in outputs]
    references = [d["references"] for d in outputs]
    greedy, beam = [d["greedy"] for d in outputs], [d["beam"] for d in outputs]
    tokenize = signature_tokenizer(final["bleu_signature"])  # as the test was scored
    source_tokenize, _ = bleu_tokenizer(config.src_lang)
    decodes = [{**d, **sentence_scores(d["beam"], d["references"], tokenize)} for d in outputs]
    write_json(out_dir / "decodes.json", decodes)

    _save_attention(out_dir, model, src_tok, tgt_tok, decodes, source_tokenize)
    _save_masks(out_dir, src_tok, tgt_tok, sources, references, source_tokenize)

    test = {k: v for k, v in final.items() if k.startswith("test_") or k.endswith("_signature")}
    metrics = {
        "model": "Transformer",
        **test,
        "exact_match": float(np.mean([b in r for b, r in zip(beam, references)])),
        "beam_changed": sum(g != b for g, b in zip(greedy, beam)),
        "beam_vs_greedy": paired_bleu(beam, greedy, references, tokenize=tokenize),
        "bleu_by_length": bleu_by_length(sources, beam, references, tokenize, source_tokenize),
        "length_trend": length_trend(sources, decodes, source_tokenize),
        "train_pairs": final["train_pairs"],
        **{k: final[k] for k in ("split", "test_sources_cut", "valid_near_duplicates_of_train",
                                 "test_near_duplicates_of_train") if k in final},
        "src_lang": config.src_lang,
        "tgt_lang": config.tgt_lang,
        "corpus": config.corpus if config.corpus in SUBSETS else Path(config.corpus).name,
        "src_vocab": len(src_tok),
        "tgt_vocab": len(tgt_tok),
        "parameters": sum(p.numel() for p in model.parameters()),
        "beam_size": config.beam_size,
        "length_penalty": config.length_penalty,
        **run_summary(run_dir, "tokens_per_s"),
        "target_bleu": TARGETS.mt_test_bleu,
        "goal_bleu": TARGETS.mt_goal_bleu,
    }
    write_json(paths.site_assets / "mt" / "metrics.json", metrics)
    record_timing(paths.site_assets / "mt", "evaluate_s", time.perf_counter() - t0)
    return metrics


def _save_attention(out_dir: Path, model, src_tok, tgt_tok, decodes: list[dict], source_tokenize: str) -> None:
    """Attention of the best, typical and worst sentences of readable length, computed on the CPU so the arrays
    do not depend on the device; the explorer and the heatmaps show these same weights."""
    low, high = ATTENTION_WORDS
    readable = [d for d in decodes if low <= len(words(d["source"], source_tokenize)) <= high] or decodes
    examples, arrays = [], {}
    for n, d in enumerate(decode_cases(readable, ATTENTION_PER_CASE)):
        src_ids = src_tok.encode(d["source"])[:model.max_positions]
        out_ids = tgt_tok.encode(d["beam"])[:model.max_positions - 1]
        examples.append({"case": d["case"], "bleu": d["bleu"], "source_tokens": src_tok.pieces(src_ids),
                         "target_tokens": ["<bos>", *tgt_tok.pieces(out_ids)],
                         "source": d["source"], "output": d["beam"], "references": d["references"]})
        for kind, weights in attention_for(model, src_ids, out_ids).items():
            arrays[f"example{n}_{kind}"] = weights
    save_arrays(out_dir / "attention.npz", **arrays)
    write_json(out_dir / "attention.json", examples)


def _save_masks(out_dir: Path, src_tok, tgt_tok, sources: list[str], references: list[list[str]],
                source_tokenize: str) -> None:
    """The masks of a batch of short to long sentences, so the padding differs from row to row."""
    by_length = np.argsort([len(words(s, source_tokenize)) for s in sources], kind="stable")
    batch = by_length[np.linspace(0, len(sources) - 1, min(MASK_BATCH, len(sources))).astype(int)]
    masks = mask_batch([src_tok.encode(sources[i]) for i in batch], [tgt_tok.encode(references[i][0]) for i in batch])
    save_arrays(out_dir / "masks.npz", **masks)
    write_json(out_dir / "mask_tokens.json", {
        "source": [src_tok.pieces(row) for row in masks["src"].tolist()],
        "target": [tgt_tok.pieces(row) for row in masks["tgt"].tolist()],
    })
