"""The figures stage: evaluation arrays in runs/<model>/eval -> images in site_assets/<model>/ + manifest."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.config import CONFIG, FINAL, METRICS, PROVENANCE, Paths, PipelineError, saved_config
from pipeline.evaluate.metrics import normalize_rows
from pipeline.scoring.bleu import decode_cases
from pipeline.compare.experiments import experiment_results
from pipeline.figures import cls as cls_figures
from pipeline.figures import experiments as experiment_figures
from pipeline.figures import explorer
from pipeline.figures import mt as mt_figures
from pipeline.io import load_arrays, read_json, read_jsonl, record_timing, write_json

FIGURES = "figures.json"
HEATMAP_EXAMPLES = 3  # attention examples drawn as heatmaps (best, typical, worst); the explorer shows them all


def entry_maker(paths: Paths, model: str):
    """A function that describes one figure file of `model` for the manifest, run provenance included."""
    provenance = read_json(paths.run(model) / PROVENANCE, "provenance file", require=("git_commit", "started"))
    run = {"git_commit": provenance["git_commit"], "started": provenance["started"]}

    def entry(file: Path, title: str, caption: str, alt: str, **extra) -> dict:
        return {"path": file.relative_to(paths.site_assets).as_posix(), "title": title, "caption": caption,
                "alt": alt, "model": model, "run": run, **extra}

    return entry


def build_cls(paths: Paths) -> list[dict]:
    """Every ResNet figure, from runs/cls/eval and site_assets/cls/metrics.json."""
    out, eval_dir = paths.site_assets / "cls", paths.run("cls") / "eval"
    metrics = read_json(out / "metrics.json", "ResNet metrics (run `make figures`)")
    records = read_jsonl(paths.run("cls") / METRICS)
    classes = metrics["classes"]
    examples = load_arrays(eval_dir / "examples.npz")
    cams = load_arrays(eval_dir / "gradcam.npz")
    entry = entry_maker(paths, "cls")
    acc = 100 * metrics["test_accuracy"]
    figures = [
        entry(cls_figures.training_curves(records, metrics["test_accuracy"], out / "curves.png"),
              "Training curves", f"Loss and accuracy per epoch; the dashed line is the test accuracy ({acc:.2f}%).",
              "Line charts of training and validation loss and accuracy per epoch.", id="cls_curves"),
        entry(cls_figures.confusion_heatmap(normalize_rows(np.array(metrics["confusion"])), classes,
                                            out / "confusion.png"),
              "Normalised confusion matrix", "Each row is one true class; cells give the share predicted as each "
              "class, so the diagonal is the per-class recall.",
              "Heatmap of the row-normalised 10 by 10 confusion matrix with class names.", id="cls_confusion"),
        entry(cls_figures.per_class_bars(metrics["per_class"], out / "per_class.png"),
              "Per-class precision, recall and F1", "Precision, recall and F1 of each class on the test set.",
              "Grouped bar chart of precision, recall and F1 for the ten classes.", id="cls_per_class"),
    ]
    for kind, title, caption in (
        ("correct", "Correct predictions", "A seeded random sample of correctly classified test images."),
        ("wrong", "Wrong predictions", "The most confident mistakes on the test set: true label, prediction, "
                                       "confidence."),
    ):
        file = cls_figures.prediction_grid(examples[f"{kind}_images"], examples[f"{kind}_labels"],
                                           examples[f"{kind}_predictions"], examples[f"{kind}_confidence"],
                                           classes, title, out / f"grid_{kind}.png")
        figures.append(entry(file, title, caption, f"Grid of {len(examples[f'{kind}_images'])} test images "
                             "with true and predicted labels.", id=f"cls_grid_{kind}"))
    cells = load_arrays(eval_dir / "cells.npz")
    sprite, offsets = explorer.thumbnail_sprite(cells["images"], out / "cells.jpg")
    by_cell: dict[str, list[dict]] = {}
    for (x, y), index, true, predicted, confidence in zip(offsets, cells["index"], cells["labels"],
                                                          cells["predictions"], cells["confidence"]):
        by_cell.setdefault(f"{true},{predicted}", []).append(
            {"index": int(index), "confidence": round(float(confidence), 4), "x": x, "y": y})
    explorer.data_script(out / "explorer.js", "confusion", {
        "classes": classes, "counts": metrics["confusion"], "cells": by_cell,
        "sprite": sprite.relative_to(paths.site_assets).as_posix(), "size": int(cells["images"].shape[-1]),
        "columns": explorer.SPRITE_COLUMNS,
    })
    correct = cams["labels"] == cams["predictions"]
    for kind, rows in (("correct", correct), ("wrong", ~correct)):
        if not rows.any():
            continue
        file = cls_figures.gradcam_panel(cams["images"][rows], cams["cam_predicted"][rows], cams["cam_true"][rows],
                                         cams["labels"][rows], cams["predictions"][rows], classes,
                                         f"Grad-CAM on {kind} predictions", out / f"gradcam_{kind}.png")
        figures.append(entry(file, f"Grad-CAM, {kind} predictions",
                             "Image, Grad-CAM heatmap and overlay for the predicted class, then for the true "
                             "class (layer4, the last convolutional stage).",
                             f"Rows of test images with Grad-CAM heatmaps for {kind} predictions.",
                             id=f"cls_gradcam_{kind}"))
    return figures


def build_mt(paths: Paths) -> list[dict]:
    """Every Transformer figure, from runs/mt/eval and site_assets/mt/metrics.json."""
    out, eval_dir = paths.site_assets / "mt", paths.run("mt") / "eval"
    metrics = read_json(out / "metrics.json", "Transformer metrics (run `make figures`)")
    records = read_jsonl(paths.run("mt") / METRICS)
    entry = entry_maker(paths, "mt")
    figures = [
        entry(mt_figures.training_curves(records, metrics["test_bleu"], out / "curves.png"),
              "Training curves", "Training and validation loss per epoch, and validation BLEU (greedy decoding); "
              "the dashed line is the test BLEU with beam search.",
              "Line charts of loss and BLEU per epoch.", id="mt_curves"),
        entry(mt_figures.bleu_by_length(metrics["bleu_by_length"], metrics["test_bleu"], out / "bleu_by_length.png"),
              "BLEU by source length", "Corpus BLEU of the beam-search outputs, by source length.",
              "Bar chart of BLEU per source-length bucket.", id="mt_bleu_by_length"),
    ]
    decodes = read_json(eval_dir / "decodes.json", "decoded test sentences")
    cases = decode_cases(decodes, per_case=3)
    write_json(out / "decode_table.json", cases)
    languages = (metrics["src_lang"], metrics["tgt_lang"])
    figures.append(entry(mt_figures.decode_table(cases, languages, out / "decode_table.png"), "Decoded outputs",
                         "Best, typical and worst test sentences by sentence BLEU.",
                         f"Table of {languages[0]} sources, {languages[1]} references and the model's outputs.",
                         id="mt_decodes"))

    masks = load_arrays(eval_dir / "masks.npz")
    tokens = read_json(eval_dir / "mask_tokens.json", "mask batch tokens")
    row = int(np.argmin(masks["target_padding"].sum(1)))  # the sentence with the most padding
    figures.append(entry(mt_figures.masks(masks, tokens["source"], tokens["target"], row, out / "masks.png"),
                         "Attention masks", "For one real test batch: the source padding mask of every sentence; then, "
                         "for its shortest target, the padding mask, the causal mask and their combination.",
                         "Four grids of allowed and masked positions.", id="mt_masks"))

    weights = load_arrays(eval_dir / "attention.npz")
    attention_examples = read_json(eval_dir / "attention.json", "attention examples")
    explorer.data_script(out / "explorer.js", "translation", {
        "languages": [metrics["src_lang"], metrics["tgt_lang"]],
        "decodes": [{k: d[k] for k in ("source", "references", "greedy", "beam")}
                    | {"bleu": round(d["bleu"], 2), "chrf": round(d["chrf"], 2)} for d in decodes],
        "attention": [{**example, "weights": {kind: np.round(weights[f"example{n}_{kind}"], 4).tolist()
                                              for kind in mt_figures.KIND_TITLES}}
                      for n, example in enumerate(attention_examples)],
    })
    return figures + _attention_figures(out, entry, weights, attention_examples)


def _attention_figures(out: Path, entry, weights, attention_examples: list[dict]) -> list[dict]:
    """Heatmaps of every layer of the first examples, and of every head of the first."""
    figures = []
    for n, example in enumerate(attention_examples[:HEATMAP_EXAMPLES]):
        source, target = example["source_tokens"], example["target_tokens"]
        for kind in mt_figures.KIND_TITLES:
            stack = weights[f"example{n}_{kind}"]  # (layers, heads, Tq, Tk)
            for layer in range(len(stack)):
                file = mt_figures.attention_grid(stack[layer], kind, layer, source, target,
                                                 out / f"attention/example{n + 1}_{kind}_layer{layer + 1}.png")
                figures.append(entry(file, f"{mt_figures.KIND_TITLES[kind].capitalize()}, layer {layer + 1}",
                                     f"Every head of layer {layer + 1} for “{example['source']}” → "
                                     f"“{example['output']}”.",
                                     f"Attention heatmaps of layer {layer + 1}, one per head, tokens on the axes.",
                                     id=f"mt_attention_{n + 1}_{kind}_{layer + 1}", example=n + 1, kind=kind,
                                     layer=layer + 1))
                if n:
                    continue
                for head in range(len(stack[layer])):
                    name = f"attention_{kind}_layer{layer + 1}_head{head + 1}.png"
                    file = mt_figures.attention_head(stack[layer][head], kind, layer, head, source, target,
                                                     out / "attention" / name)
                    figures.append(entry(file, f"{mt_figures.KIND_TITLES[kind].capitalize()}, layer {layer + 1}, "
                                               f"head {head + 1}", f"“{example['source']}” → “{example['output']}”.",
                                         "Attention heatmap of one head with tokens on the axes.",
                                         id=f"mt_head_{kind}_{layer + 1}_{head + 1}", example=1, kind=kind,
                                         layer=layer + 1, head=head + 1))
    return figures


def _network_settings(norms: dict) -> str:
    """How the analysis built its networks, in words (older analyses used the standard ResNet's settings)."""
    return (f"networks {norms.get('width', 64)} channels wide in the first stage, with "
            f"{'1 × 1 projection' if norms.get('projection_shortcuts', True) else 'parameter-free zero-padded'} "
            f"shortcuts where the shape changes and the identity start "
            f"{'on (residual blocks only)' if norms.get('identity_start', True) else 'off'}")


def _deletion_plot(result: dict, out: Path, name: str) -> tuple:
    return (experiment_figures.deletion_curves(result["deletion"], out / f"{name}.png"), "Deletion test",
            "Confidence in the predicted class as 4 × 4-pixel regions are replaced by the dataset mean, in order of "
            "Grad-CAM saliency, at random, and least salient first; mean and ± one standard deviation over the "
            "images.", "Three falling curves of confidence against the share of the image removed.", "curves")


def _decoding_plot(result: dict, out: Path, name: str) -> tuple:
    return (experiment_figures.decoding_grid(result["answer"], out / f"{name}.png"),
            "Validation BLEU by decoding setting", "Each point is the mean validation BLEU of the runs decoded with "
            "one beam size and length penalty; the square marks the recipe's own setting. The intervals of the "
            "differences are in the table.", "Lines of validation BLEU against the length penalty, one per beam size.",
            "grid")


def _curves_plot(result: dict, out: Path, name: str) -> tuple:
    metrics = [m for m in ("val_accuracy", "val_bleu", "val_loss", "train_loss")
               if any(r["curves"].get(m) for r in result["runs"])][:3]
    return (experiment_figures.overlaid_curves(result, metrics, out / f"{name}.png"), "Curves of every arm",
            ("The training loss every 25 optimiser steps, then " if any(r.get("loss_trace") for r in result["runs"])
             else "") + "per epoch, each arm's mean over its runs; a band of ± one standard deviation where an arm "
            "has several seeds.", f"Line charts of {', '.join(metrics)} per epoch, one line per arm.", "curves")


def _sweep_scores_plot(result: dict, out: Path, name: str) -> tuple | None:
    """Scores against the swept value and against minutes; none while a single value has finished."""
    if len({r["config"][result["sweep"]] for r in result["runs"]}) < 2:
        return None
    scored = [m for m in result["metrics"] if m.startswith(("val_", "test_")) and not m.endswith("_loss")]
    return (experiment_figures.sweep_scores(result, scored, out / f"{name}_scores.png"),
            f"Scores against {result['sweep']} and training time",
            f"The last {', '.join(scored)} of each value of {result['sweep']} (the mean of its runs), against the "
            "value and against the minutes of training it took on the machines the table of runs names" + (
                ": typical minutes, each epoch taken at the median time of the epochs at its image side among the "
                "runs on the same CPU kind and precision, so a run slowed by a shared host does not move its point "
                "(the table gives the measured ones)" if experiment_figures.has_typical_times(result) else "")
            + ". Test scores are shown, never used to choose.",
            f"Two line charts of {', '.join(scored)}: against {result['sweep']} and against minutes of training.",
            "scores")


# The figures a design's page shows (Design.plots), each: (file, title, caption, alt text, id suffix) or None.
PLOTS = {"curves": _curves_plot, "sweep_scores": _sweep_scores_plot, "deletion": _deletion_plot,
         "decoding_grid": _decoding_plot}


def build_experiments(paths: Paths) -> list[dict]:
    """Every experiment figure, from site_assets/experiments/*.json."""
    out, figures = paths.site_assets / "experiments", []
    for result in experiment_results(paths):
        name = result["name"]
        commits = sorted({r["commit"] for r in result["runs"]})
        run = {"git_commit": ", ".join(commits), "started": ""}

        def entry(file: Path, title: str, caption: str, alt: str, kind: str) -> dict:
            return {"path": file.relative_to(paths.site_assets).as_posix(), "title": title, "caption": caption,
                    "alt": alt, "model": "experiments", "experiment": name, "id": f"exp_{name}_{kind}", "run": run}

        for plot in result["plots"]:
            made = PLOTS[plot](result, out, name)
            if made is not None:
                figures.append(entry(*made))
        if "gradient_norms" in result:
            figures.append(entry(experiment_figures.gradient_norms(result["gradient_norms"],
                                                                   out / f"{name}_gradient_norms.png"),
                                 "Gradient norm per block", "The L2 norm of the loss gradient at the output of the "
                                 "stem and of every block, input to output, on one batch of real training images, "
                                 f"at initialisation and after {result['gradient_norms']['steps']} SGD steps; "
                                 + _network_settings(result["gradient_norms"]) + ".",
                                 "Two panels of per-layer gradient norms on a log scale, four networks each.",
                                 "gradient_norms"))
    drawn = {paths.site_assets / f["path"] for f in figures}
    for stale in set(out.glob("*.png")) - drawn:  # of an experiment that has no run that counts any more
        stale.unlink()
    return figures


BUILDERS = {"cls": build_cls, "mt": build_mt, "experiments": build_experiments}


def main_run_summary(paths: Paths, model: str) -> dict:
    """What the pages need of a run besides its metrics: config, provenance, epochs, final scores."""
    run_dir = paths.run(model)
    return {
        "config": saved_config(model, read_json(run_dir / CONFIG, "run config")),  # every field, older runs' too
        "provenance": read_json(run_dir / PROVENANCE, "provenance file"),
        "epochs": read_jsonl(run_dir / METRICS),
        "final": read_json(run_dir / FINAL, "test result of the run"),
    }


def build_figures(paths: Paths, model: str) -> list[dict]:
    """Draw one model's (or the experiments') figures; list them in site_assets/<model>/figures.json, with the
    main run's record for a model."""
    t0 = time.perf_counter()
    figures = BUILDERS[model](paths)
    write_json(paths.site_assets / model / FIGURES, figures)
    if model != "experiments":
        write_json(paths.site_assets / model / "run.json", main_run_summary(paths, model))
        record_timing(paths.site_assets / model, "figures_s", time.perf_counter() - t0)
    return figures


def _over_seeds(paths: Paths, experiment: str, metric: str) -> dict | None:
    """Mean, standard deviation and per-seed values of a metric from a seeds experiment with two runs or more."""
    path = paths.site_assets / "experiments" / f"{experiment}.json"
    if not path.exists():
        return None
    result = read_json(path, f"results of experiment {experiment}")
    values = [{"seed": r["seed"], "value": r["values"][metric], "run": r["folder"]} for r in result["runs"]
              if metric in r["values"]]
    if len(values) < 2:
        return None
    summary = next(iter(result["summaries"][metric].values()))
    return {"mean": summary["mean"], "sd": summary["sd"], "n": summary["n"], "halfwidth": summary.get("halfwidth"),
            "per_seed": values, "experiment": experiment}


def headline_numbers(paths: Paths) -> list[dict]:
    """The numbers the home page leads with, each with its target and whether it is met."""
    cls = read_json(paths.site_assets / "cls" / "metrics.json", "ResNet metrics")
    mt = read_json(paths.site_assets / "mt" / "metrics.json", "Transformer metrics")
    accuracy, bleu = _over_seeds(paths, "seeds-cls", "test_accuracy"), _over_seeds(paths, "seeds-mt", "test_bleu")
    return [
        {"id": "cls_test_accuracy", "label": "ResNet-18 test accuracy", "value": cls["test_accuracy"],
         "unit": "%", "target": cls["target_accuracy"], "seeds": accuracy,
         "met": (accuracy["mean"] if accuracy else cls["test_accuracy"]) >= cls["target_accuracy"]},
        {"id": "mt_test_bleu", "label": "Transformer test BLEU", "value": mt["test_bleu"], "unit": "BLEU",
         "target": mt["target_bleu"], "goal": mt["goal_bleu"], "seeds": bleu,
         "met": (bleu["mean"] if bleu else mt["test_bleu"]) >= mt["target_bleu"]},
        {"id": "mt_test_chrf", "label": "Transformer test chrF", "value": mt["test_chrf"], "unit": "chrF",
         "seeds": _over_seeds(paths, "seeds-mt", "test_chrf")},
        {"id": "cls_train_minutes", "label": "ResNet-18 training time", "value": cls["train_wall_s"] / 60,
         "unit": "min"},
        {"id": "mt_train_minutes", "label": "Transformer training time", "value": mt["train_wall_s"] / 60,
         "unit": "min"},
    ]


def write_manifest(paths: Paths) -> dict:
    """site_assets/manifest.json: every figure of both models and the headline numbers."""
    figures = []
    for model in BUILDERS:
        listed = read_json(paths.site_assets / model / FIGURES, f"{model} figure list")
        for figure in listed:
            if not (paths.site_assets / figure["path"]).is_file():
                raise PipelineError(f"{paths.site_assets / model / FIGURES} lists {figure['path']}, which is missing.")
        figures.extend(listed)
    experiments = [{"name": r["name"], "question": r["question"], "design": r["design"], "complete": r["complete"],
                    "runs": [{"name": run["folder"], "seed": run["seed"],
                              "differing_config": {k: run["config"].get(k) for k in r["differing_fields"]},
                              "final": {k: v for k, v in run["values"].items() if k.startswith("test_")}}
                             for run in r["runs"]],
                    "answer": r["answer"]} for r in experiment_results(paths)]
    manifest = {"figures": figures, "numbers": headline_numbers(paths), "experiments": experiments}
    write_json(paths.manifest, manifest)
    return manifest
