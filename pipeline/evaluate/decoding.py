"""The decoding experiment's evaluation: a finished Transformer run's validation sentences decoded with every
beam size and length penalty of a grid and scored with BLEU, into the run's decoding.json (inference only; the
test sentences are not decoded, so the test set chooses nothing)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import CHECKPOINT, DECODING, PipelineError, setting_key
from pipeline.data.translation import with_all_references
from pipeline.io import read_json, write_json
from pipeline.scoring.bleu import bleu_tokenizer, corpus_bleu
from pipeline.scoring.decode import translate
from pipeline.trained import drop_long, load_splits, load_trained
from pipeline.runtime import progress, provenance


def decoded_settings(run_dir: Path) -> set[str]:
    """The settings a run's decoding.json already holds (none before the first decode)."""
    path = run_dir / DECODING
    return set(read_json(path, "validation decodes of the run")["settings"]) if path.exists() else set()


def decode_validation(run_dir: Path, settings: list[tuple[int, float]]) -> dict:
    """Decode the run's validation sentences (the ones it was validated on while training: its split, pairs
    too long for max_tokens left out, each source once with all its targets) with each (beam size, length
    penalty) that decoding.json does not hold yet, on the CPU; score each with the run's BLEU tokenizer; write
    and return the file's contents, with the commit each setting was decoded at and where the last ran."""
    if not (run_dir / CHECKPOINT).exists():
        raise PipelineError(f"{run_dir / CHECKPOINT} is missing: the decoding experiment decodes each run's "
                            "validation sentences with its trained weights. Move the run's folder aside and train it "
                            "again with `make experiments`.")
    config, model, src_tok, tgt_tok = load_trained(run_dir, torch.device("cpu"))
    splits, _ = load_splits(config)
    sources, references = with_all_references(drop_long(splits.val, src_tok, tgt_tok, config.max_tokens,
                                                        "validation"))
    tokenize, _ = bleu_tokenizer(config.tgt_lang)
    path = run_dir / DECODING
    kept = read_json(path, "validation decodes of the run") if path.exists() else {}
    if (kept.get("sources"), kept.get("references")) != (sources, references):
        kept = {}  # decodes of other sentences than the run's validation split: decoded again
    results = dict(kept.get("settings", {}))
    where = provenance(config.seed, torch.device("cpu"), "fp32")
    todo = [(beam, alpha) for beam, alpha in settings if setting_key(beam, alpha) not in results]
    with progress(len(todo) * len(sources), f"decoding {run_dir.name}", "sentences") as bar:
        for beam, alpha in todo:
            hypotheses = translate(model, sources, src_tok, tgt_tok, config.max_len, torch.device("cpu"), beam,
                                   alpha, length_ratio=config.length_ratio, length_extra=config.length_extra,
                                   done=bar.update)
            results[setting_key(beam, alpha)] = {"beam_size": beam, "length_penalty": alpha,
                                                 "val_bleu": corpus_bleu(hypotheses, references, tokenize),
                                                 "git_commit": where["git_commit"], "hypotheses": hypotheses}
    record = {"tokenize": tokenize, "sources": sources, "references": references, "settings": results,
              "provenance": kept.get("provenance") if not todo else where}
    write_json(path, record)
    return record
