"""Experiments as data: experiments.yaml names the runs that answer each question; this module reads it,
trains what is missing, and compares finished runs from their metric files only."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CONFIG, CONFIGS, FINAL, MAIN_RUN, METRICS, PROFILES, PROVENANCE, REPO, Paths, \
    PipelineError, make_config, saved_config
from pipeline.io import read_json, read_jsonl, write_json
from pipeline.report.claims import compare, difference_halfwidth, proportion_halfwidth

EXPERIMENTS = Path(os.environ.get("PIPELINE_EXPERIMENTS", REPO / "experiments.yaml"))  # Make's EXPERIMENTS=
DESIGNS = ("seeds", "ablation", "sweep", "deletion")
ANALYSES = ("gradient_norms",)
GRADIENT_NORMS = "gradient_norms.json"  # in runs/cls/analyses/
DELETION = "deletion.json"  # in the main run's eval/, written by the evaluation stage
FINAL_METRICS = {"cls": ("test_accuracy", "test_loss"),
                 "mt": ("test_bleu", "test_chrf", "test_ter", "test_greedy_bleu", "test_bleu_lowercase")}
EPOCH_METRICS = {"cls": ("val_accuracy", "val_loss", "train_loss", "train_accuracy"),
                 "mt": ("val_bleu", "val_loss", "train_loss")}
CHANCE = {"val_accuracy": 0.15, "val_bleu": 1.0}  # at or below this, a run learnt nothing: unstable
HIGHER_IS_BETTER = {"test_accuracy": True, "val_accuracy": True, "train_accuracy": True, "test_bleu": True,
                    "val_bleu": True, "test_chrf": True, "test_greedy_bleu": True, "test_bleu_lowercase": True,
                    "test_ter": False, "test_loss": False, "val_loss": False, "train_loss": False}


@dataclass(frozen=True)
class RunSpec:
    name: str  # as in experiments.yaml
    arm: str  # runs of one arm differ only in their seed
    overrides: dict  # config fields, base included
    folder: str  # runs/MODEL/FOLDER: the main run, EXPERIMENT-NAME, or that of the run declared `same_as`


@dataclass(frozen=True)
class Experiment:
    name: str
    model: str
    question: str
    metrics: list[str]
    design: str
    budget: str
    runs: list[RunSpec]
    profile: str = "full"
    control: str | None = None  # ablation: the arm the others are measured against
    sweep: str | None = None  # sweep: the config field varied
    choose_on: str | None = None  # sweep: the validation score that chooses
    analysis: str | None = None  # a computation beside the runs: gradient_norms
    comparisons: tuple = ()  # ablation: (arm, against, expected word or None), each given a verdict
    claim: str = ""  # the claim the experiment tests, in words
    caveats: tuple = ()  # what a reader must know before trusting the answer (a proxy, a shorter schedule)

    def config(self, run: RunSpec):
        return make_config(self.model, self.profile, run.overrides)

    def command(self, run: RunSpec) -> str:
        """The command that trains one run by hand."""
        options = " ".join(f"--{k} {v}" for k, v in run.overrides.items())
        profile = f" --profile {self.profile}" if self.profile != "full" else ""
        return f"python -m pipeline train {self.model} --name {run.folder}{profile} {options}".strip()


def _fail(path: Path, where: str, problem: str):
    raise PipelineError(f"{path}: {where}: {problem}")


def parse_experiments(data, path: Path) -> list[Experiment]:
    """Experiments from the parsed YAML, each field checked; a problem names the file, experiment and field."""
    if not isinstance(data, dict) or not data:
        _fail(path, "top level", "expected a mapping of experiment names to their definitions")
    experiments, same_as_of = [], {}  # (experiment, run) -> "EXPERIMENT/RUN" it is the same as
    for name, spec in data.items():
        where = f"experiment {name!r}"
        if not isinstance(spec, dict):
            _fail(path, where, "expected a mapping with model, question, metrics, design and runs")
        known = {"model", "question", "metrics", "design", "budget", "base", "runs", "profile", "control", "sweep",
                 "choose_on", "analysis", "comparisons", "claim", "caveats"}
        for key in spec:
            if key not in known:
                _fail(path, f"{where}, field {key!r}", f"unknown field; the fields are {', '.join(sorted(known))}")
        model = spec.get("model")
        if model not in CONFIGS:
            _fail(path, f"{where}, field 'model'", f"must be one of {', '.join(CONFIGS)}, not {model!r}")
        for key in ("question", "budget"):
            if not isinstance(spec.get(key), str) or not spec[key].strip():
                _fail(path, f"{where}, field {key!r}", "must be a non-empty sentence")
        design = spec.get("design")
        if design not in DESIGNS:
            _fail(path, f"{where}, field 'design'", f"must be one of {', '.join(DESIGNS)}, not {design!r}")
        known_metrics = FINAL_METRICS[model] + EPOCH_METRICS[model]
        metrics = spec.get("metrics")
        if not isinstance(metrics, list) or not metrics or any(m not in known_metrics for m in metrics):
            _fail(path, f"{where}, field 'metrics'", f"must be a list drawn from {', '.join(known_metrics)}")
        profile = spec.get("profile", "full")
        if profile not in PROFILES[model]:
            _fail(path, f"{where}, field 'profile'", f"must be one of {', '.join(PROFILES[model])}")
        fields = {f.name for f in dataclasses.fields(CONFIGS[model])}
        base = spec.get("base") or {}
        runs_spec = spec.get("runs")
        if not isinstance(base, dict) or any(k not in fields for k in base):
            _fail(path, f"{where}, field 'base'", f"must map config fields of {model} to values")
        if not isinstance(runs_spec, dict) or not runs_spec:
            _fail(path, f"{where}, field 'runs'", "must map run names to their config overrides")
        runs = []
        for run_name, overrides in runs_spec.items():
            run_where = f"{where}, run {run_name!r}"
            overrides = dict(overrides or {})
            arm = str(overrides.pop("arm", name if design == "seeds" else run_name))  # seeds: one arm
            same_as = overrides.pop("same_as", None)
            if same_as is not None and (overrides or not isinstance(same_as, str) or same_as.count("/") != 1):
                _fail(path, run_where, "same_as takes EXPERIMENT/RUN, a run of another experiment trained with "
                                       "the same config, and no other overrides")
            for key in overrides:
                if key not in fields:
                    _fail(path, run_where, f"{key!r} is not a config field of {model}")
            if run_name == MAIN_RUN and (overrides or base or profile != "full"):
                _fail(path, run_where, "the main run takes the default config: no overrides, no base, full profile")
            if same_as is not None:
                same_as_of[name, run_name] = same_as
            folder = MAIN_RUN if run_name == MAIN_RUN else f"{name}-{run_name}"
            runs.append(RunSpec(str(run_name), arm, {**base, **overrides}, folder))
        if spec.get("analysis") not in (None, *ANALYSES):
            _fail(path, f"{where}, field 'analysis'", f"must be one of {', '.join(ANALYSES)}")
        if design == "deletion" and (model != "cls" or [r.name for r in runs] != [MAIN_RUN]):
            _fail(path, f"{where}, field 'runs'", "the deletion test reads the main ResNet run: runs: {main: {}}")
        caveats = spec.get("caveats", [])
        if not isinstance(caveats, list) or not all(isinstance(c, str) and c.strip() for c in caveats):
            _fail(path, f"{where}, field 'caveats'", "must be a list of sentences")
        if not isinstance(spec.get("claim", ""), str):
            _fail(path, f"{where}, field 'claim'", "must be a sentence")
        arms = {r.arm for r in runs}
        comparisons = []
        for i, item in enumerate(spec.get("comparisons") or []):
            if not isinstance(item, dict) or item.get("arm") not in arms or item.get("against") not in arms \
                    or item.get("expect") not in (None, "higher", "lower") or set(item) - {"arm", "against", "expect"}:
                _fail(path, f"{where}, field 'comparisons', item {i + 1}",
                      "must be {arm: ARM, against: ARM, expect: higher or lower (optional)} with arms of the runs")
            comparisons.append((item["arm"], item["against"], item.get("expect")))
        experiment = Experiment(str(name), model, spec["question"].strip(), metrics, design, spec["budget"].strip(),
                                runs, profile, spec.get("control"), spec.get("sweep"), spec.get("choose_on"),
                                spec.get("analysis"), tuple(comparisons), spec.get("claim", "").strip(),
                                tuple(c.strip() for c in caveats))
        for run in runs:
            try:
                experiment.config(run)
            except PipelineError as e:
                _fail(path, f"{where}, run {run.name!r}", str(e))
        if design == "ablation" and experiment.control not in arms and not comparisons:
            _fail(path, f"{where}, field 'control'", "must name one of the arms of the runs")
        if design == "sweep":
            if experiment.sweep not in fields:
                _fail(path, f"{where}, field 'sweep'", f"must name the config field of {model} that is varied")
            if experiment.choose_on not in EPOCH_METRICS[model] or not experiment.choose_on.startswith("val_"):
                _fail(path, f"{where}, field 'choose_on'", "must be a validation score (val_...): the test set "
                                                           "chooses nothing")
        experiments.append(experiment)
    return [_resolve_same_as(e, experiments, same_as_of, path) for e in experiments]


def _resolve_same_as(experiment: Experiment, experiments: list[Experiment], same_as_of: dict,
                     path: Path) -> Experiment:
    """A run declared `same_as: EXPERIMENT/RUN` is that run (same folder, trained once, shown in both
    experiments): it takes that run's config, base included, which must be of the same model and profile."""
    by_name = {e.name: e for e in experiments}
    runs = []
    for run in experiment.runs:
        same_as = same_as_of.get((experiment.name, run.name))
        if same_as is not None:
            where = f"experiment {experiment.name!r}, run {run.name!r}, field 'same_as'"
            other_name, other_run = same_as.split("/")
            other = by_name.get(other_name)
            target = next((r for r in other.runs if r.name == other_run), None) if other else None
            if target is None or (other_name, other_run) in same_as_of:
                _fail(path, where, f"{same_as!r} names no run declared in full in this file")
            if (other.model, other.profile) != (experiment.model, experiment.profile):
                _fail(path, where, f"{same_as!r} is not of the same model and profile")
            run = dataclasses.replace(run, overrides=target.overrides, folder=target.folder)
        runs.append(run)
    return dataclasses.replace(experiment, runs=runs)


def load_experiments(path: Path | None = None) -> list[Experiment]:
    """The experiments of experiments.yaml (or of $PIPELINE_EXPERIMENTS), checked."""
    import yaml

    path = path or EXPERIMENTS
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PipelineError(f"{path} cannot be read ({e.strerror}).") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path} is not valid YAML ({str(e).splitlines()[0]}).") from None
    return parse_experiments(data, path)


def analysis_path(paths: Paths, name: str) -> Path:
    return paths.runs / "cls" / "analyses" / f"{name}.json"


def run_gradient_norms(paths: Paths, steps: int = 30, batch: int = 64) -> dict:
    """Gradient norms of ResNet-18/34, residual and plain, on real CIFAR-10 training images."""
    import torch

    from pipeline.data.cifar10 import load_cifar10, normalize
    from pipeline.evaluate.analyses import gradient_norms

    data = load_cifar10(paths.data, strict_counts=False)
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            idx = torch.randint(0, len(data.train_labels), (batch,), generator=generator)
            yield normalize(data.train_images[idx]), data.train_labels[idx]

    x, y = next(batches())
    result = gradient_norms(x, y, batches(), steps)
    write_json(analysis_path(paths, "gradient_norms"), result)
    return result


def train_missing(paths: Paths, experiments: list[Experiment]) -> None:
    """Train every run that has no final.json yet, resuming an interrupted one; one line per run; then
    compute the analyses that are missing."""
    from pipeline.train import train

    todo = [(e, r) for e in experiments for r in e.runs if not (paths.run(e.model, r.folder) / FINAL).exists()]
    for number, (experiment, run) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {experiment.name}: {run.folder}  ({experiment.command(run)})",
              flush=True)
        train(experiment.model, experiment.config(run), paths.run(experiment.model, run.folder),
              paths, resume=True)
    if not todo:
        print("every experiment run has finished")
    for experiment in experiments:
        if experiment.analysis == "gradient_norms" and not analysis_path(paths, "gradient_norms").exists() \
                and os.environ.get("RANK", "0") == "0":
            print(f"{experiment.name}: gradient norms of ResNet-18/34, residual and plain", flush=True)
            run_gradient_norms(paths)


# ---- the comparison stage: metric files in, numbers out --------------------------------------------------------

def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_record(paths: Paths, experiment: Experiment, run: RunSpec) -> dict | None:
    """What the comparison needs of one finished run (None while it has not finished)."""
    folder = paths.run(experiment.model, run.folder)
    if not (folder / FINAL).exists():
        return None
    final = read_json(folder / FINAL, "test result of the run")
    epochs = read_jsonl(folder / METRICS)
    config = saved_config(experiment.model, read_json(folder / CONFIG, "run config"))
    provenance = read_json(folder / PROVENANCE, "provenance file")
    last = epochs[-1] if epochs else {}
    values = {m: final[m] for m in FINAL_METRICS[experiment.model] if m in final}
    values.update({m: last[m] for m in EPOCH_METRICS[experiment.model] if m in last})
    return {"name": run.name, "folder": run.folder, "arm": run.arm, "seed": config["seed"],
            "parameters": final.get("parameters"),
            "config": config, "values": values,
            "final": final, "curves": {m: [r.get(m) for r in epochs] for m in EPOCH_METRICS[experiment.model]},
            "train_wall_s": final["train_wall_s"], "commit": provenance["git_commit"],
            "diverged": any(not math.isfinite(r.get("train_loss", 0.0)) for r in epochs)
            or any(m in last and last[m] <= floor for m, floor in CHANCE.items()),
            "command": experiment.command(run)}


def differing_fields(records: list[dict]) -> list[str]:
    """The config fields whose values are not the same in every run."""
    keys = sorted({k for r in records for k in r["config"]})
    return [k for k in keys if len({repr(r["config"].get(k)) for r in records}) > 1]


def _sampling_halfwidth(metric: str, record: dict, model: str) -> float:
    """95 % half-width of one run's score from the images or sentences it was measured on: binomial for an
    accuracy, sacrebleu's bootstrap for test BLEU; NaN where there is none."""
    final = record["final"]
    if metric == "test_accuracy":
        return proportion_halfwidth(final["test_accuracy"], final["test_images"])
    if metric == "val_accuracy":
        return proportion_halfwidth(record["values"]["val_accuracy"], record["config"]["val_size"])
    if metric == "test_bleu":
        return final["test_bleu_ci95"]
    return math.nan


def arm_summary(metric: str, records: list[dict], model: str) -> dict:
    """Mean, standard deviation over seeds, count, and the 95 % half-width of the mean."""
    values = [r["values"][metric] for r in records if metric in r["values"]]
    mean, sd = _mean_sd(values)
    if len(values) > 1:
        halfwidth = 1.96 * sd / math.sqrt(len(values))
        spread_from = "seeds"
    else:
        halfwidth = _sampling_halfwidth(metric, records[0], model)
        spread_from = ("validation set" if metric.startswith("val_") else "test set") if math.isfinite(halfwidth) \
            else "none"
    return {"mean": mean, "sd": sd, "n": len(values), "min": min(values), "max": max(values),
            "halfwidth": halfwidth, "spread_from": spread_from}


def answer(experiment: Experiment, summaries: dict, records: list[dict]) -> dict:
    """The experiment's answer, computed from its numbers: the words and the numbers behind them."""
    metric = experiment.metrics[0]
    if experiment.design == "seeds":
        s = summaries[metric][records[0]["arm"]]
        return {"kind": "seeds", "metric": metric, **s}
    if experiment.design == "ablation":
        if experiment.control not in summaries[metric]:
            return {"kind": "ablation", "metric": metric, "control": experiment.control, "effects": []}
        control = summaries[metric][experiment.control]
        effects = []
        for arm, s in summaries[metric].items():
            if arm == experiment.control:
                continue
            spread = difference_halfwidth(s["halfwidth"], control["halfwidth"])
            word = compare(s["mean"], control["mean"], spread) if math.isfinite(spread) else "no measured spread"
            effects.append({"arm": arm, "difference": s["mean"] - control["mean"], "halfwidth": spread,
                            "word": word, "mean": s["mean"], "control_mean": control["mean"]})
        return {"kind": "ablation", "metric": metric, "control": experiment.control, "effects": effects}
    # sweep: chosen on validation, among runs that did not diverge
    usable = [r for r in records if not r["diverged"] and experiment.choose_on in r["values"]]
    sign = 1 if HIGHER_IS_BETTER[experiment.choose_on] else -1
    chosen = max(usable, key=lambda r: sign * r["values"][experiment.choose_on]) if usable else None
    return {"kind": "sweep", "metric": metric, "field": experiment.sweep, "choose_on": experiment.choose_on,
            "chosen": chosen["name"] if chosen else None,
            "chosen_score": chosen["values"][experiment.choose_on] if chosen else None,
            "chosen_value": chosen["config"][experiment.sweep] if chosen else None,
            "diverged": [r["name"] for r in records if r["diverged"]]}


def deletion_answer(deletion: dict) -> dict:
    """Does removing the most salient pixels first hurt confidence more than removing them at random, or the
    least salient first? The area between the curves per image, its mean and 95 % interval, in words."""
    words = {}
    for key in ("random_minus_salient", "least_minus_salient"):
        gap = deletion["area_between"][key]
        words[key] = compare(gap["mean"], 0.0, gap["halfwidth"])
    return {"kind": "deletion", "words": words, **deletion["area_between"]}


def compare_experiment(paths: Paths, experiment: Experiment) -> dict | None:
    """Numbers for one experiment from its finished runs, or None if none has finished."""
    records = [r for r in (run_record(paths, experiment, run) for run in experiment.runs) if r]
    if not records:
        return None
    extra = {}
    if experiment.design == "deletion":
        path = paths.run("cls") / "eval" / DELETION
        if not path.exists():
            return None
        extra["deletion"] = read_json(path, "deletion test of the main run")
    if experiment.analysis and analysis_path(paths, experiment.analysis).exists():
        extra[experiment.analysis] = read_json(analysis_path(paths, experiment.analysis), experiment.analysis)
    arms = {}
    for r in records:
        arms.setdefault(r["arm"], []).append(r)
    summaries = {m: {arm: arm_summary(m, rs, experiment.model) for arm, rs in arms.items()
                     if any(m in r["values"] for r in rs)} for m in experiment.metrics}
    complete = len(records) == len(experiment.runs)
    return {
        "name": experiment.name, "model": experiment.model, "question": experiment.question,
        "design": experiment.design, "budget": experiment.budget, "metrics": experiment.metrics,
        "control": experiment.control, "sweep": experiment.sweep, "choose_on": experiment.choose_on,
        "complete": complete, "planned_runs": len(experiment.runs),
        "differing_fields": differing_fields(records),
        "runs": [{k: v for k, v in r.items() if k != "final"} for r in records],
        "summaries": summaries,
        "answer": deletion_answer(extra["deletion"]) if experiment.design == "deletion"
        else answer(experiment, summaries, records),
        "train_wall_s": sum(r["train_wall_s"] for r in records),
        **extra,
    }


def compare_all(paths: Paths, experiments: list[Experiment]) -> list[dict]:
    """The comparison stage: site_assets/experiments/<name>.json for every experiment with a finished run,
    and index.json naming them in the order of experiments.yaml."""
    results, folder = [], paths.site_assets / "experiments"
    for experiment in experiments:
        result = compare_experiment(paths, experiment)
        if result is None:
            (folder / f"{experiment.name}.json").unlink(missing_ok=True)
            continue
        write_json(folder / f"{experiment.name}.json", result)
        results.append(result)
    write_json(folder / "index.json", {"experiments": [r["name"] for r in results],
                                        "planned": [e.name for e in experiments]})
    return results


def experiment_results(paths: Paths) -> list[dict]:
    """The comparison stage's results, in the order of experiments.yaml (none before `make experiments`)."""
    folder = paths.site_assets / "experiments"
    if not (folder / "index.json").exists():
        return []
    names = read_json(folder / "index.json", "experiment index")["experiments"]
    return [read_json(folder / f"{name}.json", f"results of experiment {name}") for name in names]
