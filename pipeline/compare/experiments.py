"""The comparison stage: the finished runs' files in, numbers and verdicts out (site_assets/experiments/).

It reads only what training and evaluation wrote (config, provenance, metrics, final scores, the kept test
predictions, the analyses) and imports no model. Every verdict comes from pipeline.compare.stats.verdict."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np

from pipeline.compare import stats
from pipeline.compare.insights import main_run_insights
from pipeline.config import CONFIG, DECODE_SPEED, DECODING, DELETION, FINAL, MAIN_RUN, METRICS, PROVENANCE, REPO, \
    STEP_SPEED, TEST_PREDICTIONS, TRAINING_CODE, Paths, PipelineError, changed_fields, saved_config, \
    setting_key, uncommitted
from pipeline.scoring.bleu import paired_bleu, signature_tokenizer
from pipeline.experiments.definitions import CHANCE, EPOCH_METRICS, FINAL_METRICS, HIGHER_IS_BETTER, Experiment, \
    RunSpec
from pipeline.io import load_arrays, read_json, read_jsonl, write_json

# What a run's provenance says about where and how it ran: arms that differ in any of these differ in more than
# their config, and the page says so.
PROVENANCE_FIELDS = ("precision", "processes", "device", "cpu", "cpu_family", "cpu_model", "threads")
ITEM_METRICS = {"test_accuracy", "test_bleu"}  # scored per test item: a paired test on the items applies
# Fields that say where and how fast a run ran, not what it computed: a run may differ from its declaration in these.
# The precision asked for is one ("auto" takes bf16 on some CPUs only); the precision a run trained in is in its
# provenance, and arms trained in different ones are marked as differing in more than their config.
RUNTIME_FIELDS = {"device", "threads", "collective_timeout_s", "precision"}
# Set to 1 for a draft report that also counts runs trained from a tree with uncommitted changes.
COUNT_UNCOMMITTED = "PIPELINE_COUNT_UNCOMMITTED"
INSIGHTS = "insights.json"  # the tests behind the insights page's sentences


def read_run(paths: Paths, experiment: Experiment, run: RunSpec) -> dict | None:
    """What the comparison needs of one finished run (None while it has not finished)."""
    folder = paths.run(experiment.model, run.folder)
    if not (folder / FINAL).exists():
        return None
    final = read_json(folder / FINAL, "test result of the run", require=("train_wall_s",))
    epochs = read_jsonl(folder / METRICS)
    trained = read_json(folder / CONFIG, "run config", require=("seed",))
    config = saved_config(experiment.model, trained)
    declared = experiment.config(run)
    changed = [k for k in changed_fields(experiment.model, trained, declared) if k not in RUNTIME_FIELDS]
    if changed and run.folder != MAIN_RUN:  # the main run is what `make train` trained (PROFILE, *_ARGS included)
        raise PipelineError(
            f"{folder / CONFIG}: experiments.yaml declares run {run.name!r} of experiment {experiment.name!r} with "
            + ", ".join(f"{k} = {getattr(declared, k)!r}" for k in changed) + ", but this folder's run was trained "
            "with " + ", ".join(f"{k} = {config[k]!r}" for k in changed) + " (a default changed since, or the "
            "declaration did). Declare the values it was trained with (in the run or the experiment's base) to keep "
            "it, or move the folder aside and train the run again with `make experiments`.")
    provenance = read_json(folder / PROVENANCE, "provenance file", require=("git_commit",))
    last = epochs[-1] if epochs else {}
    values = {m: final[m] for m in FINAL_METRICS[experiment.model] if m in final}
    values.update({m: last[m] for m in EPOCH_METRICS[experiment.model] if m in last})
    losses = [r.get("train_loss", math.nan) for r in epochs]
    diverged = any(not math.isfinite(x) for x in losses) or (len(losses) > 1 and losses[-1] > losses[0])
    return {"name": run.name, "folder": run.folder, "arm": run.arm, "seed": config["seed"],
            "parameters": final.get("parameters"), "config": config, "values": values,
            "curves": {m: [r.get(m) for r in epochs] for m in EPOCH_METRICS[experiment.model]},
            "loss_trace": [point for r in epochs for point in r.get("loss_trace", [])],
            "train_wall_s": final["train_wall_s"], "commit": provenance["git_commit"],
            "epoch_seconds": [{"side": r.get("resolution"), "train_s": r.get("train_s"), "eval_s": r.get("eval_s") or 0}
                              for r in epochs],
            "bleu_signature": final.get("bleu_signature", ""),
            **({"changed_by_padding": final["outputs_changed_by_padding"], "test_sentences": final["test_sentences"]}
               if "outputs_changed_by_padding" in final else {}),
            "provenance": {k: provenance.get(k, 1 if k == "processes" else None) for k in PROVENANCE_FIELDS},
            "diverged": diverged,
            "at_chance": any(m in last and last[m] <= floor for m, floor in CHANCE.items()),
            "command": experiment.command(run)}


def counts(record: dict) -> bool:
    """Whether a run counts as evidence: one trained from a tree with uncommitted changes cannot be traced to
    the code that made it, so it counts only in a draft report ($PIPELINE_COUNT_UNCOMMITTED=1)."""
    return not uncommitted(record["commit"]) or os.environ.get(COUNT_UNCOMMITTED) == "1"


def finished_runs(paths: Paths, experiment: Experiment) -> tuple[list[dict], list[dict]]:
    """The experiment's finished runs that count, and those that do not (trained from uncommitted changes)."""
    finished = [r for r in (read_run(paths, experiment, run) for run in experiment.runs) if r]
    return [r for r in finished if counts(r)], [r for r in finished if not counts(r)]


def differing_fields(records: list[dict], key: str = "config") -> list[str]:
    """The fields (of the config, or of the provenance) whose values are not the same in every run."""
    keys = sorted({k for r in records for k in r[key]})
    return [k for k in keys if len({repr(r[key].get(k)) for r in records}) > 1]


def _item_scores(paths: Paths, experiment: Experiment, record: dict) -> dict | None:
    """A run's kept test predictions: per-image correctness (ResNet) or hypotheses and references
    (Transformer); None for runs that kept none."""
    folder = paths.run(experiment.model, record["folder"])
    if experiment.model == "cls":
        path = folder / f"{TEST_PREDICTIONS}.npz"
        if not path.exists():
            return None
        arrays = load_arrays(path)
        return {"correct": arrays["predictions"] == arrays["labels"]}
    path = folder / f"{TEST_PREDICTIONS}.json"
    return read_json(path, "kept test translations") if path.exists() else None


def seed_tests(metric: str, a: list[dict], b: list[dict], items: dict) -> list[dict]:
    """Per-seed paired tests on the test items, shown beside the verdict and not counted by it: McNemar's exact
    test (ResNet) or sacrebleu's paired bootstrap (Transformer) at each seed both arms share where both runs
    kept their per-item test predictions."""
    if metric not in ITEM_METRICS:
        return []
    by_seed_a, by_seed_b = {r["seed"]: r for r in a}, {r["seed"]: r for r in b}
    pairs = [(by_seed_a[s], by_seed_b[s]) for s in sorted(set(by_seed_a) & set(by_seed_b))
             if items.get(by_seed_a[s]["folder"]) is not None and items.get(by_seed_b[s]["folder"]) is not None]
    tests = []
    for x, y in pairs:
        ta, tb = items[x["folder"]], items[y["folder"]]
        if metric == "test_accuracy":
            tests.append({**stats.mcnemar(ta["correct"], tb["correct"]), "seed": x["seed"]})
        elif [d["source"] for d in ta] == [d["source"] for d in tb]:
            tests.append({**paired_bleu([d["beam"] for d in ta], [d["beam"] for d in tb],
                                        [d["references"] for d in ta],
                                        tokenize=signature_tokenizer(x["bleu_signature"])), "seed": x["seed"]})
    return tests


def test_sample_term(a: list[dict], b: list[dict], items: dict) -> dict | None:
    """The test-sample noise a verdict on CIFAR-10's test accuracy adds to the training noise (every seed scores
    the same 10,000 images, so the spread over seeds holds only part of it: how each image's outcome varies from
    seed to seed, not which images were drawn): the per-image difference of the two arms' correctness, each
    averaged over its runs that kept per-image predictions. Adding it in full counts that part twice, so the
    interval errs on the wide side. None where an arm has no such run."""
    kept_a = [r for r in a if items.get(r["folder"]) is not None]
    kept_b = [r for r in b if items.get(r["folder"]) is not None]
    if not kept_a or not kept_b:
        return None
    mean_a = np.mean([items[r["folder"]]["correct"] for r in kept_a], axis=0)
    mean_b = np.mean([items[r["folder"]]["correct"] for r in kept_b], axis=0)
    return stats.test_sample_term(mean_a, mean_b, sorted(r["seed"] for r in kept_a),
                                  sorted(r["seed"] for r in kept_b))


def compare_arms(metric: str, arm: str, against: str, arms: dict, items: dict, borrowed: dict | None,
                 expect: str | None, model: str = "cls") -> dict:
    """One comparison on one metric: one interval over both noises, and the verdict the one rule reads off it."""
    a = {r["seed"]: r["values"][metric] for r in arms[arm] if metric in r["values"]}
    b = {r["seed"]: r["values"][metric] for r in arms[against] if metric in r["values"]}
    if not a or not b:
        return {"metric": metric, "verdict": "not enough runs", "training": None, "interval": None,
                "sample": None, "seed_tests": [], "borrowed": False}
    training = stats.training_difference(a, b, borrowed)
    fixed_test_set = model == "cls" and metric in ITEM_METRICS
    sample = test_sample_term(arms[arm], arms[against], items) if fixed_test_set else None
    # On a fixed test set a verdict needs the test-sample noise too; without per-item predictions it cannot count it.
    interval = stats.pooled_interval(training, sample) if sample is not None or not fixed_test_set else None
    return {"metric": metric, "difference": float(np.mean(list(a.values())) - np.mean(list(b.values()))),
            "training": training, "interval": interval, "sample": sample,
            "seed_tests": seed_tests(metric, arms[arm], arms[against], items),
            "verdict": stats.verdict(interval, expect, HIGHER_IS_BETTER.get(metric, True)),
            "borrowed": training is not None and training["method"].startswith("t with the seed spread")}


def _comparisons(experiment: Experiment, records: list[dict]) -> list[tuple[str, str, str | None]]:
    """The declared comparisons, or every arm against the control."""
    if experiment.comparisons:
        return list(experiment.comparisons)
    arms = list(dict.fromkeys(r["arm"] for r in records))
    return [(arm, experiment.control, None) for arm in arms if arm != experiment.control]


def sweep_answer(experiment: Experiment, records: list[dict], comparisons: list[dict]) -> dict:
    """A value is chosen only when it beats the default by the rule; the best value is bracketed when both
    neighbours score worse, else the sweep reached its edge."""
    field, metric = experiment.sweep, experiment.choose_on
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    default = experiment.default_value()
    values = sorted({r["config"][field] for r in records})
    score = {v: np.mean([r["values"][metric] for r in records if r["config"][field] == v and metric in r["values"]])
             for v in values}
    usable = [v for v in values if not all(r["diverged"] or r["at_chance"] for r in records
                                           if r["config"][field] == v)]
    best = max(usable, key=lambda v: sign * score[v]) if usable else None
    if best is None:
        bracket = "none"
    else:
        i = values.index(best)
        neighbours = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
        bracket = "bracketed" if len(neighbours) == 2 else ("low edge" if i == 0 else "high edge")
    # An exploratory sweep is a lead for a confirmation: it reports its verdicts and chooses nothing.
    beating = [c for c in comparisons if c["verdict"] == "better" and not experiment.exploratory]
    chosen = max(beating, key=lambda c: sign * c["mean"])["value"] if beating else None
    return {"kind": "sweep", "exploratory": experiment.exploratory, "metric": metric, "field": field,
            "default": default, "values_run": len(values),
            "best": best,
            "best_score": None if best is None else float(score[best]), "bracket": bracket,
            "chosen_value": chosen if chosen is not None else default, "changed": chosen is not None,
            "diverged": [r["name"] for r in records if r["diverged"]],
            "at_chance": [r["name"] for r in records if r["at_chance"]]}


def decoded_runs(paths: Paths, experiment: Experiment, records: list[dict]) -> dict[str, dict]:
    """A decoding experiment's validation decodes, by run folder: only runs whose decoding.json holds every
    setting of the grid, each decoded from a commit (or counted anyway, as runs are, in a draft report)."""
    keys = {setting_key(*s) for s in experiment.settings()}
    decodes = {}
    for r in records:
        path = paths.run(experiment.model, r["folder"]) / DECODING
        if path.exists():
            record = read_json(path, "validation decodes of the run")
            traced = all(counts({"commit": s["git_commit"]}) for s in record["settings"].values())
            if keys <= set(record["settings"]) and traced:
                decodes[r["folder"]] = record
    return decodes


def _machine(provenance: dict) -> str:
    """A CPU as "name (family F, model M)"."""
    return f"{provenance.get('cpu')} (family {provenance.get('cpu_family')}, model {provenance.get('cpu_model')})"


def typical_train_s(records: list[dict]) -> dict[str, float | None]:
    """Each run's training time with every epoch taken at the median time of the epochs at its image side (plus
    the median validation), over the runs that trained on its CPU kind, device and precision: a run slowed by a
    shared host costs what its recipe costs there, so runs of different lengths can be set against their time.
    None where a run's epochs record no time."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(_where(r), []).append(r)
    typical: dict[str, float | None] = {}
    for runs in groups.values():
        epochs = [e for r in runs for e in r["epoch_seconds"] if e["train_s"] is not None]
        by_side: dict = {}
        for e in epochs:
            by_side.setdefault(e["side"], []).append(e["train_s"])
        evaluation = float(np.median([e["eval_s"] for e in epochs])) if epochs else 0.0
        for r in runs:
            timed = r["epoch_seconds"] and all(e["train_s"] is not None for e in r["epoch_seconds"])
            typical[r["folder"]] = (sum(float(np.median(by_side[e["side"]])) + evaluation
                                        for e in r["epoch_seconds"]) if timed else None)
    return typical


def _where(record: dict) -> str:
    """A run's CPU kind, device and precision: the runs whose times can be pooled."""
    p = record["provenance"]
    return f"{_machine(p)}, {p.get('device')}, {p.get('precision')}"


def reproduction(experiment: Experiment, records: list[dict]) -> dict | None:
    """Whether a main run trained again on another machine reproduces its seeds experiment: its headline score
    against the 95 % prediction interval of one new run from the experiment's other runs. Only where the main run
    trained on a CPU kind, device or precision none of those did (a retrain here; the committed report's main run
    trained where its seeds did), else None."""
    main = next((r for r in records if r["folder"] == MAIN_RUN), None)
    metric = experiment.metrics[0]
    others = [r for r in records if r["folder"] != MAIN_RUN and metric in r["values"]]
    elsewhere = sorted({_where(r) for r in others})
    if main is None or metric not in main["values"] or len(others) < 2 or _where(main) in elsewhere:
        return None
    low, high = stats.prediction_interval([r["values"][metric] for r in others])
    score = main["values"][metric]
    return {"metric": metric, "score": score, "low": low, "high": high, "inside": low <= score <= high,
            "runs": len(others), "machine": _where(main), "machines": elsewhere}


def runs_mix(records: list[dict]) -> dict:
    """What the runs of one comparison page mix, from their provenance: the commits they were trained from (and
    whether the training code differs between them), and the CPU kinds and precisions they trained on."""
    commits = sorted({r["commit"] for r in records})
    return {"commits": commits, "training_code_changes": training_code_changes(commits),
            "machines": machines_of(records)}


def machines_of(records: list[dict]) -> list[dict]:
    """The CPU kinds and precisions the runs trained on, with how many runs each."""
    machines: dict[str, int] = {}
    for r in records:
        where = f"{_machine(r['provenance'])}, {r['provenance'].get('precision')}"
        machines[where] = machines.get(where, 0) + 1
    return [{"machine": m, "runs": n} for m, n in sorted(machines.items())]


def training_code_changes(commits: list[str]) -> list[str] | None:
    """The files of the training code (TRAINING_CODE) that differ between the first commit and any other, from the
    repository's history; None where it cannot tell (no git, a commit it does not hold, an uncommitted tree)."""
    if any(uncommitted(c) for c in commits):
        return None
    changed: set[str] = set()
    for other in commits[1:]:
        try:
            out = subprocess.run(["git", "diff", "--name-only", commits[0], other, "--", *TRAINING_CODE], cwd=REPO,
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        changed.update(out.stdout.split())
    return sorted(changed)


def decoding_answer(experiment: Experiment, records: list[dict], decodes: dict[str, dict]) -> tuple[dict, list]:
    """Each setting of the grid against the recipe's own on validation BLEU, by the one rule: the interval over
    seeds (paired t; each seed draws its own validation sentences, so it holds their noise too). Where it excludes
    zero, sacrebleu's paired bootstrap on each seed's validation sentences is shown beside it. A setting is chosen
    only when it beats the default, the best of those that do."""
    keys = [setting_key(*s) for s in experiment.settings()]
    default = setting_key(*experiment.default_setting())
    decoded = [r for r in records if r["folder"] in decodes]
    scores = {k: {r["seed"]: decodes[r["folder"]]["settings"][k]["val_bleu"] for r in decoded} for k in keys}
    means = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}
    comparisons = []
    for key in keys:
        if key == default:
            continue
        training = stats.training_difference(scores[key], scores[default])
        tests = []  # information beside the verdict, where the interval over seeds excludes zero
        if training is not None and (training["low"] > 0 or training["high"] < 0):
            for r in decoded:
                record = decodes[r["folder"]]
                tests.append({**paired_bleu(record["settings"][key]["hypotheses"],
                                            record["settings"][default]["hypotheses"], record["references"],
                                            tokenize=record["tokenize"]), "seed": r["seed"]})
        interval = stats.pooled_interval(training)
        word = stats.verdict(interval, "higher")
        word = {"supported": "better", "contradicted": "worse"}.get(word, word)
        comparisons.append({"arm": key, "against": default, "value": key, "expect": None, "mean": means[key],
                            "metrics": [{"metric": "val_bleu", "difference": means[key] - means[default],
                                         "training": training, "interval": interval, "sample": None,
                                         "seed_tests": tests, "verdict": word,
                                         "borrowed": False}], "verdict": word})
    beating = [c for c in correct_family(comparisons) if c["verdict"] == "better"]
    chosen = max(beating, key=lambda c: c["mean"])["value"] if beating else default
    best = max(keys, key=lambda k: means[k])
    return {"kind": "decoding", "metric": "val_bleu", "default": default, "default_score": means[default],
            "best": best, "best_score": means[best], "chosen_value": chosen, "changed": bool(beating),
            "decoded_runs": len(decoded),
            "decoded_at": sorted({s["git_commit"][:10] for d in decodes.values() for s in d["settings"].values()}),
            "decoded_on": sorted({_machine(d["provenance"]) for d in decodes.values()}),
            "sentences": {str(r["seed"]): len(decodes[r["folder"]]["sources"]) for r in decoded},
            "alphas": experiment.decoding["length_penalty"],
            # Means by beam size (rows) and length penalty (columns); greedy has one, under the first alpha.
            "table": [{"beam_size": beam, "cells": [
                {"mean": means[setting_key(beam, alpha)], "default": setting_key(beam, alpha) == default}
                if beam or i == 0 else None for i, alpha in enumerate(experiment.decoding["length_penalty"])]}
                for beam in experiment.decoding["beam_size"]]}, comparisons


def deletion_answer(deletion: dict) -> dict:
    """Does deleting the regions Grad-CAM marks first lower the model's confidence faster than deleting random
    regions, or the least marked first? The area between the curves per image: mean, 95 % t interval, verdict."""
    out = {"kind": "deletion", "images": deletion["images"]}
    for key in ("random_minus_salient", "least_minus_salient"):
        gap = deletion["area_between"][key]
        n = deletion["images"]
        low, high = stats.mean_interval(gap["mean"], gap["sd"], n)
        interval = {"difference": gap["mean"], "low": low, "high": high, "method": f"t over {n} images"}
        out[key] = {**gap, "low": low, "high": high, "verdict": stats.verdict(interval, "higher")}
    return out


def gradient_norm_sentences(norms: dict) -> list[str]:
    """Sentences computed from the gradient-norm analysis: for each network, how the gradient at the stem's
    output compares with that at the last block's, at initialisation and after the training steps; then plain
    against residual at each depth."""
    lines, stem = [], {}
    for name, layers in norms["networks"].items():
        first, last = layers[0], layers[-1]
        stem[name] = first["init"]
        lines.append(f"{name}: at initialisation the gradient at the stem's output is {first['init']:.3g}, "
                     f"{first['init'] / last['init']:.3g} times that at the last block's output ({last['init']:.3g}); "
                     f"after {norms['steps']} SGD steps {first['trained']:.3g}, "
                     f"{first['trained'] / last['trained']:.3g} times the last block's ({last['trained']:.3g}).")
    for depth in (18, 34):
        plain = next((v for k, v in stem.items() if k.startswith(f"ResNet-{depth} plain")), None)
        residual = next((v for k, v in stem.items() if k.startswith(f"ResNet-{depth} (residual")), None)
        if plain and residual:
            lines.append(f"At {depth} layers the plain network's stem gets {plain / residual:.3g} times the residual "
                         "network's gradient at initialisation.")
    return lines


def padding_sentences(arms: dict[str, list[dict]]) -> list[str]:
    """For each arm whose runs decoded the test set both in padded batches (test_bleu) and one sentence at a
    time (test_bleu_alone): both scores, how many outputs the padding changed, and whether padding lowers BLEU
    by the one rule (paired t over the arm's seeds)."""
    lines = []
    for arm, runs in arms.items():
        runs = [r for r in runs if "test_bleu_alone" in r["values"] and "changed_by_padding" in r]
        if not runs:
            continue
        padded = {r["seed"]: r["values"]["test_bleu"] for r in runs}
        alone = {r["seed"]: r["values"]["test_bleu_alone"] for r in runs}
        difference = stats.training_difference(padded, alone)
        word = stats.verdict(stats.pooled_interval(difference))
        per_run = [f"{r['changed_by_padding']} of {r['test_sentences']}" for r in runs]  # each seed has its own split
        if len(runs) == 1:
            how_many, changed, seeds = "one run", per_run[0], ""
        else:
            how_many, changed = f"the mean of {len(runs)} runs", f"{', '.join(per_run[:-1])} and {per_run[-1]}"
            seeds = f" (seeds {', '.join(str(r['seed']) for r in runs)})"
        line = (f"{arm}: test BLEU {np.mean(list(padded.values())):.2f} decoded in padded batches and "
                f"{np.mean(list(alone.values())):.2f} one sentence at a time, with no padding ({how_many}); "
                f"the padding changed {changed} outputs{seeds}")
        if word == "not enough runs":
            line += "; one run gives no interval, so whether padding lowers the score stays open."
        else:
            interval = f"{difference['low']:+.2f} to {difference['high']:+.2f}, {difference['method']}"
            line += {"lower": f"; padding lowers the score ({interval}).",
                     "higher": f"; padding raises the score ({interval}).",
                     "no clear difference": f"; no clear difference ({interval})."}[word]
        lines.append(line)
    return lines


def borrowed_spreads(paths: Paths, experiments: list[Experiment]) -> dict:
    """Per model and metric, the seed spread of the model's seeds experiment (its default recipe), which arms
    with a single run borrow: {"sd", "n", "source"}."""
    spreads = {}
    for experiment in experiments:
        if experiment.design != "seeds":
            continue
        records, _ = finished_runs(paths, experiment)
        for metric in FINAL_METRICS[experiment.model] + EPOCH_METRICS[experiment.model]:
            values = [r["values"][metric] for r in records if metric in r["values"]]
            if len(values) >= 2:
                spreads.setdefault(experiment.model, {})[metric] = {
                    "sd": float(np.std(values, ddof=1)), "n": len(values), "source": experiment.name,
                    "machines": [m["machine"] for m in machines_of(records)]}
    return spreads


def correct_family(comparisons: list[dict]) -> list[dict]:
    """An experiment's comparisons on their deciding metric (each one's first) as one family: Holm's adjustment of
    their intervals' p-values (stats.holm), kept beside each interval; a verdict whose adjusted p-value reaches
    ALPHA says no clear difference (adjusting only raises a p-value, so no verdict turns the other way)."""
    deciding = [c["metrics"][0] for c in comparisons if c["metrics"][0]["interval"] is not None]
    for m, adjusted in zip(deciding, stats.holm([m["interval"]["p_value"] for m in deciding])):
        m["interval"].update(p_holm=adjusted, family=len(deciding))
        if adjusted >= stats.ALPHA:
            m["verdict"] = "no clear difference"
    for c in comparisons:
        c["verdict"] = c["metrics"][0]["verdict"]
    return comparisons


def compare_experiment(paths: Paths, experiment: Experiment, spreads: dict | None = None) -> dict | None:
    """Numbers and verdicts for one experiment from its finished runs that count, or None if none does."""
    records, uncounted = finished_runs(paths, experiment)
    extra = _analyses(paths, experiment) if records else None
    if extra is None:
        return None
    arms: dict[str, list[dict]] = {}
    for r in records:
        arms.setdefault(r["arm"], []).append(r)
    summaries = {m: {arm: stats.seed_summary([r["values"][m] for r in rs if m in r["values"]])
                     for arm, rs in arms.items() if any(m in r["values"] for r in rs)} for m in experiment.metrics}
    items = {r["folder"]: _item_scores(paths, experiment, r) for r in records}
    spreads = (spreads or {}).get(experiment.model, {})
    # A confirmatory experiment was declared before its runs: no interval or verdict is worked out until all of
    # them have finished, so interim results cannot choose when to stop.
    complete = len(records) == len(experiment.runs)
    decodes = None
    if experiment.design == "decoding":
        decodes = decoded_runs(paths, experiment, records)
        complete = complete and len(decodes) == len(records)
        if not decodes:
            return None
    held = experiment.confirmatory and not complete
    typical = typical_train_s(records)
    for r in records:
        r["typical_train_s"] = typical[r["folder"]]
        del r["epoch_seconds"]  # only the typical time reads them
    comparisons = []
    if experiment.design == "ablation" and not held:
        comparisons = correct_family(_ablation_comparisons(experiment, records, arms, items, spreads))
    elif experiment.design == "sweep" and not held:
        comparisons = correct_family(_sweep_comparisons(experiment, records, items, spreads))
    answer, comparisons = _answer(experiment, held, records, comparisons, summaries, extra, decodes)
    arm_fields = {k for r in records for k in r["config"]} - {"seed"}
    varied = {k for k in differing_fields(records) if k in arm_fields}
    return {
        "name": experiment.name, "model": experiment.model, "question": experiment.question,
        "claim": experiment.claim, "caveats": list(experiment.caveats), "rule": stats.RULE,
        "design": experiment.design, "budget": experiment.budget, "metrics": experiment.metrics,
        "control": experiment.control, "sweep": experiment.sweep, "choose_on": experiment.choose_on,
        "complete": complete, "planned_runs": len(experiment.runs),
        "confirmatory": experiment.confirmatory, "exploratory": experiment.exploratory,
        "differing_fields": differing_fields(records), "varied_fields": sorted(varied),
        "differing_provenance": differing_fields(records, "provenance"),
        "mix": runs_mix(records),
        "reproduction": reproduction(experiment, records) if experiment.design == "seeds" else None,
        "runs": records, "uncounted": [{k: r[k] for k in ("folder", "commit", "command")} for r in uncounted],
        "summaries": summaries, "comparisons": comparisons, "answer": answer,
        "borrowed_spreads": spreads, "train_wall_s": sum(r["train_wall_s"] for r in records),
        # Only where an arm lets attention see source padding can a padded batch change an output.
        "padding_sentences": padding_sentences(arms) if "source_padding_mask" in varied else [], **extra,
    }


def _analyses(paths: Paths, experiment: Experiment) -> dict | None:
    """The analysis files an experiment shows beside its runs (None: a deletion test not run yet)."""
    extra = {}
    if experiment.design == "deletion":
        path = paths.analysis(DELETION)
        if not path.exists():
            return None
        extra["deletion"] = read_json(path, "deletion test of the main run")
    if experiment.analysis and (path := paths.analysis(experiment.analysis)).exists():
        extra[experiment.analysis] = read_json(path, experiment.analysis)
        if experiment.analysis == "gradient_norms":
            extra["gradient_norm_sentences"] = gradient_norm_sentences(extra["gradient_norms"])
    return extra


def _ablation_comparisons(experiment: Experiment, records: list[dict], arms: dict, items: dict,
                          spreads: dict) -> list[dict]:
    """Each declared pair of arms (else each arm against the control), on every metric; the first decides."""
    comparisons = []
    for arm, against, expect in _comparisons(experiment, records):
        if arm in arms and against in arms:
            per_metric = [compare_arms(m, arm, against, arms, items, spreads.get(m), expect if i == 0 else None,
                                       experiment.model) for i, m in enumerate(experiment.metrics)]
            comparisons.append({"arm": arm, "against": against, "expect": expect, "metrics": per_metric,
                                "verdict": per_metric[0]["verdict"]})
    return comparisons


def _sweep_comparisons(experiment: Experiment, records: list[dict], items: dict, spreads: dict) -> list[dict]:
    """Each swept value against the default on choose_on: "better" / "worse" where the rule says so."""
    default = experiment.default_value()
    by_value: dict = {}
    for r in records:
        by_value.setdefault(r["config"][experiment.sweep], []).append(r)
    if default not in by_value:
        return []
    value_arms = {str(v): rs for v, rs in by_value.items()}
    comparisons = []
    for value, rs in sorted(by_value.items()):
        if value == default:
            continue
        c = compare_arms(experiment.choose_on, str(value), str(default), value_arms, items,
                         spreads.get(experiment.choose_on), "higher", experiment.model)
        c["verdict"] = {"supported": "better", "contradicted": "worse"}.get(c["verdict"], c["verdict"])
        comparisons.append({"arm": rs[0]["arm"], "against": by_value[default][0]["arm"], "value": value,
                            "expect": None, "mean": float(np.mean([r["values"][experiment.choose_on] for r in rs])),
                            "metrics": [c], "verdict": c["verdict"]})
    return comparisons


def _answer(experiment: Experiment, held: bool, records: list[dict], comparisons: list[dict], summaries: dict,
            extra: dict, decodes) -> tuple[dict, list[dict]]:
    """The experiment's answer by its design (and a decoding experiment's comparisons)."""
    if held:
        return {"kind": "held", "metric": experiment.metrics[0]}, comparisons
    if experiment.design == "deletion":
        return deletion_answer(extra["deletion"]), comparisons
    if experiment.design == "decoding":
        return decoding_answer(experiment, records, decodes)
    if experiment.design == "sweep":
        return sweep_answer(experiment, records, comparisons), comparisons
    if experiment.design == "seeds":
        return {"kind": "seeds", "metric": experiment.metrics[0],
                **summaries[experiment.metrics[0]][records[0]["arm"]]}, comparisons
    return {"kind": "ablation", "metric": experiment.metrics[0]}, comparisons


def compare_all(paths: Paths, experiments: list[Experiment]) -> list[dict]:
    """The comparison stage: site_assets/experiments/<name>.json for every experiment with a finished run,
    and index.json naming them in the order of experiments.yaml."""
    results, folder = [], paths.site_assets / "experiments"
    spreads = borrowed_spreads(paths, experiments)
    for experiment in experiments:
        result = compare_experiment(paths, experiment, spreads)
        if result is None:
            (folder / f"{experiment.name}.json").unlink(missing_ok=True)
            continue
        write_json(folder / f"{experiment.name}.json", result)
        results.append(result)
    uncounted = {e.name: [r["folder"] for r in finished_runs(paths, e)[1]] for e in experiments}
    write_json(folder / "index.json", {"experiments": [r["name"] for r in results],
                                        "planned": [e.name for e in experiments],
                                        "uncounted": {name: runs for name, runs in uncounted.items() if runs}})
    summaries = run_summaries(paths)
    write_json(folder / "runs.json", {"runs": summaries, "speed": speed_measurements(paths),
                                      "default_timings": default_recipe_timings(summaries)})
    insights = main_run_insights(paths)
    if insights is not None:
        write_json(folder / INSIGHTS, insights)
    return results


def experiment_results(paths: Paths) -> list[dict]:
    """The comparison stage's results, in the order of experiments.yaml (none before `make experiments`)."""
    folder: Path = paths.site_assets / "experiments"
    if not (folder / "index.json").exists():
        return []
    names = read_json(folder / "index.json", "experiment index")["experiments"]
    return [read_json(folder / f"{name}.json", f"results of experiment {name}") for name in names]


def run_summaries(paths: Paths) -> list[dict]:
    """Every finished run under runs/, experiment or not: what it changed from its model's default config, its
    scores, its wall time and where it ran (BENCHMARKS.md lists them all)."""
    import dataclasses

    from pipeline.config import CONFIGS, MODEL_TITLES

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
            key = (r["model"], _machine(r["provenance"]), r["provenance"].get("precision"))
            groups.setdefault(key, []).append(r)
    rows_out = []
    for (model, machine, precision), rs in sorted(groups.items()):
        times = [r["train_wall_s"] for r in rs]
        rows_out.append({"model": model, "machine": machine, "precision": precision, "runs": len(rs),
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
