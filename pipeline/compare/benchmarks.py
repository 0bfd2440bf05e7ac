"""The rows of BENCHMARKS.md and the reproducibility page: every finished run under runs/, experiment or not, how
long today's default recipe trains per kind of machine, and the speed measurements of `python -m pipeline bench`."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.compare.provenance import PROVENANCE_FIELDS, machine
from pipeline.config import CONFIG, CONFIGS, DECODE_SPEED, FINAL, METRICS, MODEL_TITLES, PROVENANCE, STEP_SPEED, \
    Paths, saved_config, uncommitted
from pipeline.experiments.metrics import EPOCH_METRICS, FINAL_METRICS
from pipeline.io import read_json, read_jsonl


def run_summaries(paths: Paths) -> list[dict]:
    """Every finished run under runs/, experiment or not: what it changed from its model's default config, its
    scores, its wall time and where it ran."""
    rows = []
    for model in MODEL_TITLES:
        default = dataclasses.asdict(CONFIGS[model]())
        for folder in sorted((paths.runs / model).glob("*/")):
            if not (folder / FINAL).exists():
                continue
            final = read_json(folder / FINAL, "test result of the run", require=("train_wall_s",))
            config = saved_config(model, read_json(folder / CONFIG, "run config"))
            provenance = read_json(folder / PROVENANCE, "provenance file")
            epochs = read_jsonl(folder / METRICS)
            last = epochs[-1] if epochs else {}
            rows.append({
                "model": model, "name": folder.name, "seed": config["seed"], "epochs": len(epochs),
                "changed": {k: v for k, v in config.items() if v != default[k] and k != "seed"},
                "scores": {**{m: final[m] for m in FINAL_METRICS[model] if m in final},
                           **{m: last[m] for m in EPOCH_METRICS[model] if m.startswith("val_") and m in last}},
                "train_wall_s": final["train_wall_s"], "test_wall_s": final.get("test_wall_s"),
                # what the test score was computed on: images, or sentences of a split drawn here or published
                "test_items": final.get("test_images", final.get("test_sentences")),
                "split": final.get("split", "drawn") if model == "mt" else None,
                "uncommitted": uncommitted(provenance["git_commit"]),
                "provenance": {k: provenance.get(k) for k in (*PROVENANCE_FIELDS, "git_commit", "cpu_vendor",
                                                              "cpu_flags", "started")},
            })
    return rows


def default_recipe_timings(rows: list[dict]) -> list[dict]:
    """How long today's default recipe trains, per model and kind of CPU and precision: the runs whose config
    differs from today's default in the seed alone (run_summaries' rows), with their count and range."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r["changed"] and not r["uncommitted"]:
            key = (r["model"], machine(r["provenance"]), r["provenance"].get("precision"))
            groups.setdefault(key, []).append(r)
    rows_out = []
    for (model, cpu, precision), rs in sorted(groups.items()):
        times = [r["train_wall_s"] for r in rs]
        rows_out.append({"model": model, "machine": cpu, "precision": precision, "runs": len(rs),
                         "train_min": [min(times) / 60, float(np.mean(times)) / 60, max(times) / 60],
                         "test_s": [min(r["test_wall_s"] or 0 for r in rs), max(r["test_wall_s"] or 0 for r in rs)]})
    return rows_out


def speed_measurements(paths: Paths) -> list[dict]:
    """Every speed measurement `python -m pipeline bench` left in a run folder: the Transformer's beam search
    timed both ways (DECODE_SPEED), the ResNet's training step eager and compiled (STEP_SPEED)."""
    found = []
    for kind, file in (("decode", DECODE_SPEED), ("step", STEP_SPEED)):
        for path in sorted(paths.runs.glob(f"*/*/{file}")):
            found.append({"kind": kind, "model": path.parent.parent.name, "name": path.parent.name,
                          **read_json(path, "speed measurement")})
    return found


def runs_table(paths: Paths) -> dict:
    """site_assets/experiments/runs.json: the rows, the speed measurements, the default recipe's times."""
    summaries = run_summaries(paths)
    return {"runs": summaries, "speed": speed_measurements(paths), "default_timings": default_recipe_timings(summaries)}
