"""Experiments as data: experiments.yaml names the runs that answer each question (and the claim, comparisons
and caveats a page prints); this module reads and checks the fields every experiment has, and designs.py what
each design requires. Running is in running.py, comparing in pipeline/compare/."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CONFIGS, MAIN_RUN, PROFILES, REPO, PipelineError, check_run_name, make_config
from pipeline.experiments.base import Design
from pipeline.experiments.designs import DESIGN_FIELDS, DESIGNS
from pipeline.experiments.metrics import EPOCH_METRICS, FINAL_METRICS

EXPERIMENTS_FILE = "PIPELINE_EXPERIMENTS"  # the variable naming another experiments file (Make's EXPERIMENTS=)
ANALYSES = ("gradient_norms",)
# What an experiment's `machine` may pin, as a run's provenance records it, with the values each takes.
MACHINE_FIELDS = {"device": ("cpu", "cuda", "mps"), "cpu_family": int, "cpu_model": int,
                  "precision": ("bf16", "fp16", "fp32")}


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

    base: dict = dataclasses.field(default_factory=dict)  # config overrides every run shares
    confirmatory: bool = False  # declared before its runs: no verdict until every declared run has finished
    decoding: dict = dataclasses.field(default_factory=dict)  # decoding: {beam_size: [...], length_penalty: [...]}
    exploratory: bool = False  # a lead for a later confirmation: it says what scored best and chooses nothing
    views: dict = dataclasses.field(default_factory=dict)  # views: {shift: [...]}, the test-time views scored
    # Where every run is to train ({device, cpu_family, cpu_model, precision}, as provenance records them): a run
    # trained elsewhere does not count, and `make experiments` trains none of them on another device or CPU kind.
    machine: dict = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> Design:
        """What the design does (pipeline.experiments.designs): its checks, its comparison, its page."""
        return DESIGNS[self.design]

    def default_value(self):
        """A sweep's default: the value of the swept field in the recipe its runs share (profile and base)."""
        return getattr(make_config(self.model, self.profile, self.base), self.sweep)

    def config(self, run: RunSpec):
        return make_config(self.model, self.profile, run.overrides)

    def off_machine(self, provenance: dict, fields=tuple(MACHINE_FIELDS)) -> list[str]:
        """The fields of the declared machine (of those given) that a provenance, or this machine's ids, does not
        show or shows with another value."""
        return [k for k, v in self.machine.items() if k in fields and provenance.get(k) != v]

    def command(self, run: RunSpec) -> str:
        """The command that trains one run by hand."""
        options = " ".join(f"--{k} {v}" for k, v in run.overrides.items())
        profile = f" --profile {self.profile}" if self.profile != "full" else ""
        return f"python -m pipeline train {self.model} --name {run.folder}{profile} {options}".strip()


def _fail(path: Path, where: str, problem: str):
    raise PipelineError(f"{path}: {where}: {problem}")


KNOWN_FIELDS = {"model", "question", "metrics", "design", "budget", "base", "runs", "profile", "control", "sweep",
                "choose_on", "analysis", "comparisons", "claim", "caveats", "confirmatory", "exploratory", "decoding",
                "views", "machine"}


def parse_experiments(data, path: Path) -> list[Experiment]:
    """Experiments from the parsed YAML, each field checked; a problem names the file, experiment and field."""
    if not isinstance(data, dict) or not data:
        _fail(path, "top level", "expected a mapping of experiment names to their definitions")
    same_as_of: dict = {}  # (experiment, run) -> "EXPERIMENT/RUN" it is the same as
    experiments = [_parse_experiment(str(name), spec, path, same_as_of) for name, spec in data.items()]
    experiments = [_resolve_same_as(e, experiments, same_as_of, path) for e in experiments]
    for e in experiments:  # what each design requires, once every run's config is known

        def fail(field: str, problem: str, e=e):
            _fail(path, f"experiment {e.name!r}, field {field!r}", problem)

        e.kind.check(e, fail)
    return experiments


def _parse_experiment(name: str, spec, path: Path, same_as_of: dict) -> Experiment:
    """One experiment: its fields, its runs and comparisons, then what its design requires."""
    where = f"experiment {name!r}"
    if not isinstance(spec, dict):
        _fail(path, where, "expected a mapping with model, question, metrics, design and runs")
    for key in spec:
        if key not in KNOWN_FIELDS:
            _fail(path, f"{where}, field {key!r}", f"unknown field; the fields are {', '.join(sorted(KNOWN_FIELDS))}")
    model, design, metrics, profile, caveats = _checked_fields(spec, path, where)
    base = spec.get("base") or {}
    fields = {f.name for f in dataclasses.fields(CONFIGS[model])}
    if not isinstance(base, dict) or any(k not in fields for k in base):
        _fail(path, f"{where}, field 'base'", f"must map config fields of {model} to values")
    runs = _parse_runs(name, spec, model, design, profile, base, path, same_as_of)
    experiment = Experiment(name, model, spec["question"].strip(), metrics, design, spec["budget"].strip(),
                            runs, profile, spec.get("control"), spec.get("sweep"), spec.get("choose_on"),
                            spec.get("analysis"), _parse_comparisons(spec, {r.arm for r in runs}, path, where),
                            spec.get("claim", "").strip(), tuple(c.strip() for c in caveats), dict(base),
                            spec.get("confirmatory", False), spec.get("decoding") or {},
                            spec.get("exploratory", False), spec.get("views") or {},
                            _parse_machine(spec.get("machine"), path, where))
    for run in runs:
        try:
            experiment.config(run)
        except PipelineError as e:
            _fail(path, f"{where}, run {run.name!r}", str(e))
    return experiment


def _checked_fields(spec: dict, path: Path, where: str) -> tuple[str, str, list, str, list]:
    """The fields every experiment has, each of the right kind: model, design, metrics, profile, caveats (and
    question, budget, analysis, claim, confirmatory, exploratory, checked here and read as they are)."""
    model = spec.get("model")
    if not isinstance(model, str) or model not in CONFIGS:
        _fail(path, f"{where}, field 'model'", f"must be one of {', '.join(CONFIGS)}, not {model!r}")
    for key in ("question", "budget"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            _fail(path, f"{where}, field {key!r}", "must be a non-empty sentence")
    design = spec.get("design")
    if not isinstance(design, str) or design not in DESIGNS:
        _fail(path, f"{where}, field 'design'", f"must be one of {', '.join(DESIGNS)}, not {design!r}")
    for key in sorted(DESIGN_FIELDS & set(spec) - set(DESIGNS[design].fields)):
        owner = next(d.name for d in DESIGNS.values() if key in d.fields)
        _fail(path, f"{where}, field {key!r}", f"only an experiment of design {owner} takes it")
    known_metrics = FINAL_METRICS[model] + EPOCH_METRICS[model]
    metrics = spec.get("metrics")
    if not isinstance(metrics, list) or not metrics or any(m not in known_metrics for m in metrics):
        _fail(path, f"{where}, field 'metrics'", f"must be a list drawn from {', '.join(known_metrics)}")
    profile = spec.get("profile", "full")
    if not isinstance(profile, str) or profile not in PROFILES[model]:
        _fail(path, f"{where}, field 'profile'", f"must be one of {', '.join(PROFILES[model])}")
    if spec.get("analysis") not in (None, *ANALYSES):
        _fail(path, f"{where}, field 'analysis'", f"must be one of {', '.join(ANALYSES)}")
    caveats = spec.get("caveats", [])
    if not isinstance(caveats, list) or not all(isinstance(c, str) and c.strip() for c in caveats):
        _fail(path, f"{where}, field 'caveats'", "must be a list of sentences")
    if not isinstance(spec.get("claim", ""), str):
        _fail(path, f"{where}, field 'claim'", "must be a sentence")
    for key in ("confirmatory", "exploratory"):
        if not isinstance(spec.get(key, False), bool):
            _fail(path, f"{where}, field {key!r}", "must be true or false")
    if spec.get("confirmatory") and spec.get("exploratory"):
        _fail(path, f"{where}, field 'exploratory'", "an experiment is confirmatory or exploratory, not both")
    return model, design, metrics, profile, caveats


def _parse_machine(machine, path: Path, where: str) -> dict:
    """The machine every run is to train on: some of MACHINE_FIELDS, each with a value it can take."""
    if machine is None:
        return {}
    def valid(key, value) -> bool:
        kind = MACHINE_FIELDS.get(key)
        if kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return kind is not None and value in kind

    allowed = "; ".join(f"{k}: " + ("an integer, as lscpu shows it" if v is int else " or ".join(v))
                        for k, v in MACHINE_FIELDS.items())
    if not isinstance(machine, dict) or not machine or not all(valid(k, v) for k, v in machine.items()):
        _fail(path, f"{where}, field 'machine'", f"must map some of these to a value ({allowed}), not {machine!r}")
    return dict(machine)


def _parse_runs(name: str, spec: dict, model: str, design: str, profile: str, base: dict, path: Path,
                same_as_of: dict) -> list[RunSpec]:
    """The experiment's runs: arm, overrides (base included) and folder; `same_as` links noted in same_as_of."""
    where = f"experiment {name!r}"
    runs_spec = spec.get("runs")
    if not isinstance(runs_spec, dict) or not runs_spec:
        _fail(path, f"{where}, field 'runs'", "must map run names to their config overrides")
    fields = {f.name for f in dataclasses.fields(CONFIGS[model])}
    runs = []
    for run_name, overrides in runs_spec.items():
        run_where = f"{where}, run {run_name!r}"
        if not isinstance(overrides, (dict, type(None))):
            _fail(path, run_where, f"must map config fields to values ({{}} for none), not {overrides!r}")
        overrides = dict(overrides or {})
        arm = str(overrides.pop("arm", name if DESIGNS[design].one_arm else run_name))
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
        try:
            check_run_name(folder)
        except PipelineError as e:
            _fail(path, run_where, str(e))
        runs.append(RunSpec(str(run_name), arm, {**base, **overrides}, folder))
    return runs


def _parse_comparisons(spec: dict, arms: set[str], path: Path, where: str) -> tuple:
    comparisons = []
    for i, item in enumerate(spec.get("comparisons") or []):
        if not isinstance(item, dict) or item.get("arm") not in arms or item.get("against") not in arms \
                or item.get("expect") not in (None, "higher", "lower") or set(item) - {"arm", "against", "expect"}:
            _fail(path, f"{where}, field 'comparisons', item {i + 1}",
                  "must be {arm: ARM, against: ARM, expect: higher or lower (optional)} with arms of the runs")
        comparisons.append((item["arm"], item["against"], item.get("expect")))
    return tuple(comparisons)


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

    path = path or Path(os.environ.get(EXPERIMENTS_FILE) or REPO / "experiments.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PipelineError(f"{path} cannot be read ({e.strerror}).") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path} is not valid YAML ({str(e).splitlines()[0]}).") from None
    return parse_experiments(data, path)
