"""Experiments as data: definitions checked, comparisons computed from metric files, answers from numbers."""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import REPO, PipelineError
from pipeline.compare.arms import compare_arms, correct_family
from pipeline.compare.records import EpochTime, RunRecord, by_arm, differing_fields
from pipeline.compare.stats import mcnemar, pooled_interval, seed_summary, training_difference, verdict
from pipeline.scoring.bleu import paired_bleu
from pipeline.experiments.definitions import load_experiments, parse_experiments
from pipeline.experiments.base import Evidence
from pipeline.experiments.designs import DESIGNS, sweep_answer

GOOD = {
    "tiny": {"model": "cls", "question": "Q?", "metrics": ["val_accuracy"], "design": "ablation",
             "control": "a", "budget": "one epoch", "base": {"epochs": 1},
             "runs": {"a": {}, "b": {"shortcuts": False}}},
}


def test_the_shipped_experiments_parse():
    experiments = load_experiments(REPO / "experiments.yaml")
    names = {e.name for e in experiments}
    assert {"seeds-cls", "seeds-mt", "residual", "masks", "lr-cls", "lr-mt", "gradcam"} <= names
    for e in experiments:
        if e.design == "sweep":
            assert e.choose_on.startswith("val_")  # the test set chooses nothing
        if e.design == "seeds":
            assert len({run.arm for run in e.runs}) == 1  # one recipe: the spread is over all its seeds
        assert all(e.config(run) for run in e.runs)


def _as_sweep(data, **fields):
    del data["tiny"]["control"]  # an ablation's field
    data["tiny"].update(design="sweep", **fields)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tiny"].update(model="gan"), r"experiment 'tiny', field 'model': must be one of cls, mt"),
    (lambda d: d["tiny"].update(model=["cls"]), r"experiment 'tiny', field 'model': must be one of cls, mt"),
    (lambda d: d["tiny"].update(design=["ablation"]), r"experiment 'tiny', field 'design': must be one of"),
    (lambda d: d["tiny"].update(profile=["smoke"]), r"experiment 'tiny', field 'profile': must be one of"),
    (lambda d: d["tiny"].update(runs={"a": 5}), r"experiment 'tiny', run 'a': must map config fields to values"),
    (lambda d: d["tiny"].update(metrics=["accuracy"]), r"field 'metrics': must be a list drawn from"),
    (lambda d: d["tiny"]["runs"]["b"].update(lr="fast"), r"run 'b': --lr expects a float"),
    (lambda d: d["tiny"]["runs"]["b"].update(shortcut=False), r"run 'b': 'shortcut' is not a config field"),
    (lambda d: d["tiny"].update(control="c"), r"field 'control': must name one of the arms"),
    (lambda d: d["tiny"].update(control=["a"]), r"field 'control': must name one of the arms"),
    (lambda d: _as_sweep(d, sweep=["lr"], choose_on="val_accuracy"),
     r"field 'sweep': must name the config field of cls"),
    (lambda d: _as_sweep(d, sweep="lr", choose_on=["val_accuracy"]), r"field 'choose_on': must be a validation score"),
    (lambda d: d["tiny"].update(sweep="lr"), r"field 'sweep': only an experiment of design sweep takes it"),
    (lambda d: d["tiny"].update(confirmatory="yes"), r"field 'confirmatory': must be true or false"),
    (lambda d: _as_sweep(d, sweep="lr", choose_on="test_accuracy"), r"field 'choose_on': must be a validation score"),
    (lambda d: d["tiny"].update(colour="red"), r"field 'colour': unknown field"),
    (lambda d: d["tiny"].update(machine={"cpu_family": "6"}), r"field 'machine': must map some of these"),
    (lambda d: d["tiny"].update(machine={"gpu": "h100"}), r"field 'machine': must map some of these"),
    (lambda d: d["tiny"].update(machine={"precision": "bf8"}), r"field 'machine': must map some of these"),
    (lambda d: d["tiny"].update(machine={}), r"field 'machine': must map some of these"),
    (lambda d: d["tiny"]["runs"].update(main={"lr": 0.2}), r"run 'main': the main run takes the default config"),
    (lambda d: d["tiny"]["runs"].update(c={"same_as": "tiny/z"}), r"run 'c', field 'same_as': 'tiny/z' names no run"),
    (lambda d: d["tiny"]["runs"].update(c={"same_as": "tiny/a", "lr": 0.2}), r"run 'c': same_as takes EXPERIMENT/RUN"),
    (lambda d: d.update(other={**d["tiny"], "model": "mt", "metrics": ["val_bleu"], "base": {},
                               "runs": {"a": {}, "b": {"same_as": "tiny/a"}}}), r"is not of the same model"),
])
def test_a_bad_definition_names_the_file_and_the_field(tmp_path, change, message):
    data = copy.deepcopy(GOOD)
    change(data)
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PipelineError, match=str(path).replace(".", r"\.") + ".*" + message):
        load_experiments(path)


def test_a_run_declared_same_as_another_shares_its_folder_and_config(tmp_path):
    data = copy.deepcopy(GOOD)
    data["sweep"] = {**{k: v for k, v in data["tiny"].items() if k != "control"}, "design": "sweep", "sweep": "lr",
                     "choose_on": "val_accuracy", "base": {"lr": 0.5},
                     "runs": {"low": {"lr": 0.01}, "base": {}, "default": {"same_as": "tiny/a"}}}
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data))
    experiments = {e.name: e for e in load_experiments(path)}
    tiny, sweep = experiments["tiny"], experiments["sweep"]
    (shared, low), a = (next(r for r in sweep.runs if r.name == n) for n in ("default", "low")), tiny.runs[0]
    assert shared.folder == a.folder == "tiny-a" and low.folder == "sweep-low"
    assert sweep.config(shared) == tiny.config(a) and sweep.config(shared).lr != 0.5  # not this experiment's base
    assert "--name tiny-a" in sweep.command(shared)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text("tiny: [unclosed")
    with pytest.raises(PipelineError, match="experiments.yaml is not valid YAML"):
        load_experiments(path)


def test_only_differing_fields_are_listed():
    records = [{"config": {"lr": 0.1, "seed": 0, "epochs": 2}}, {"config": {"lr": 0.2, "seed": 0, "epochs": 2}},
               {"config": {"lr": 0.2, "seed": 1, "epochs": 2}}]
    assert differing_fields(records) == ["lr", "seed"]


def _run(folder, **fields):
    """A run record with what a test gives and neutral values for the rest."""
    defaults = dict(name=folder, folder=folder, arm=folder, seed=0, parameters=None, config={}, values={},
                    curves={}, loss_trace=[], train_wall_s=1.0, commit="abc", bleu_signature="",
                    provenance={"cpu": "CPU", "cpu_family": 6, "cpu_model": 167, "device": "cpu",
                                "precision": "bf16"}, diverged=False, at_chance=False, command="")
    return RunRecord(**{**defaults, **fields})


def _record(name, arm, value, seed=0, diverged=False, lr=0.15):
    return _run(name, arm=arm, seed=seed, values={"val_accuracy": value}, diverged=diverged,
                config={"lr": lr, "seed": seed})


_arms = by_arm


def test_the_t_interval_over_seeds_uses_n_minus_1_degrees_of_freedom():
    """Two seeds: the 95 % half-width of the mean is t(0.975, 1) = 12.71 standard errors, not 1.96."""
    summary = seed_summary([0.80, 0.82])
    sd = np.std([0.80, 0.82], ddof=1)
    assert summary["halfwidth"] == pytest.approx(12.706 * sd / math.sqrt(2), rel=1e-3)
    assert seed_summary([0.8])["sd"] is None and seed_summary([0.8])["halfwidth"] is None  # one run: no spread
    assert seed_summary([0.75, 0.75, 0.75])["halfwidth"] == 0.0  # runs that agree: no spread, not NaN


def rule(a, b, borrowed=None, expect=None, higher_is_better=True):
    return verdict(pooled_interval(training_difference(a, b, borrowed)), expect, higher_is_better)


def test_a_difference_the_normal_interval_calls_higher_is_no_clear_difference_under_t():
    """Three seeds a little apart: 1.96 * sd / sqrt(n) would exclude zero, Student's t (2 df) does not."""
    a = {0: 0.810, 1: 0.816, 2: 0.810}
    b = {0: 0.800, 1: 0.802, 2: 0.806}
    diffs = np.array([a[s] - b[s] for s in a])
    normal_low = diffs.mean() - 1.96 * diffs.std(ddof=1) / math.sqrt(3)
    assert normal_low > 0  # the hand-made normal interval would say "higher"
    training = training_difference(a, b)
    assert training["method"] == "paired t over 3 shared seeds" and training["low"] < 0 < training["high"]
    assert rule(a, b) == "no clear difference"
    far = {0: 0.85, 1: 0.86, 2: 0.852}
    assert rule(far, b) == "higher" and rule(b, far) == "lower"


def test_verdicts_flip_with_the_numbers_and_need_runs():
    low, high = {0: 0.70, 1: 0.72, 2: 0.71}, {0: 0.80, 1: 0.81, 2: 0.83}
    assert rule(high, low, expect="higher") == "supported"
    assert rule(low, high, expect="higher") == "contradicted"
    assert rule(high, low, expect="lower") == "contradicted"
    # a loss: lower is better, so "expected higher" (better) is supported by a lower loss
    assert rule(low, high, expect="higher", higher_is_better=False) == "supported"
    assert rule({0: 0.8}, {0: 0.7}) == "not enough runs"
    borrowed = training_difference({0: 0.8}, {0: 0.7}, {"sd": 0.01, "n": 3, "source": "seeds-cls"})
    assert borrowed["method"].endswith("seeds-cls") and verdict(pooled_interval(borrowed)) == "higher"
    # test-sample noise added in quadrature widens the one interval: a large one makes the verdict undecided
    training = training_difference(high, low)
    assert verdict(pooled_interval(training, {"se": 0.001})) == "higher"
    assert verdict(pooled_interval(training, {"se": 0.2})) == "no clear difference"


def test_more_seeds_that_agree_never_make_a_verdict_harder_to_reach():
    """Every seed points the same way and the pooled p is below 0.01, yet one seed's own paired test fails: the
    per-seed tests are information, so the verdict is the pooled one (the rule of issue 37)."""
    rng = np.random.default_rng(0)
    items, records = {}, []
    for seed in range(6):
        base = rng.random(2000) < 0.80
        better = base | (rng.random(2000) < (0.002 if seed == 0 else 0.06))  # seed 0 barely differs
        for arm, correct in (("new", better), ("old", base)):
            folder = f"{arm}-s{seed}"
            items[folder] = {"correct": correct}
            records.append(dataclasses.replace(_record(folder, arm, 0.0, seed),
                                               values={"test_accuracy": float(correct.mean())}))
    result = compare_arms("test_accuracy", "new", "old", _arms(records), items, [], "higher", "cls")
    by_seed = {t["seed"]: t["p_value"] for t in result["seed_tests"]}
    assert by_seed[0] >= 0.05 and all(p < 0.05 for s, p in by_seed.items() if s != 0)
    assert result["interval"]["p_value"] < 0.01 and result["sample"]["items"] == 2000
    assert result["verdict"] == "supported"
    fewer = [r for r in records if r.seed < 3]  # the same evidence, fewer seeds: never a stronger verdict
    assert compare_arms("test_accuracy", "new", "old", _arms(fewer), items, [], "higher", "cls")["verdict"] in (
        "supported", "no clear difference")


def test_a_significant_effect_in_the_opposite_direction_is_never_support():
    rng = np.random.default_rng(1)
    items, records = {}, []
    for seed in range(3):
        base = rng.random(5000) < 0.8
        worse = base & (rng.random(5000) > 0.05)
        for arm, correct in (("new", worse), ("old", base)):
            folder = f"{arm}-s{seed}"
            items[folder] = {"correct": correct}
            records.append(dataclasses.replace(_record(folder, arm, 0.0, seed),
                                               values={"test_accuracy": float(correct.mean())}))
    result = compare_arms("test_accuracy", "new", "old", _arms(records), items, [], "higher", "cls")
    assert result["interval"]["high"] < 0 and result["verdict"] == "contradicted"
    without_items = compare_arms("test_accuracy", "new", "old", _arms(records), {}, [], "higher", "cls")
    # without per-image predictions the test sample's noise cannot be counted: no verdict
    assert without_items["interval"] is None and without_items["verdict"] == "not enough runs"


def test_paired_tests_agree_with_the_libraries_own_results():
    from sacrebleu.metrics import BLEU
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.random(500) < 0.8, rng.random(500) < 0.7
    result = mcnemar(a, b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (result["only_a"], result["only_b"]) == (only_a, only_b)
    assert result["p_value"] == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    references = [["the cat sat on the mat"], ["a dog barks"], ["it is raining today"], ["we are ready"]] * 5
    good = [r[0] for r in references]
    bad = ["the cat", "dog", "it rains", "ready"] * 5
    bleu = paired_bleu(good, bad, references, resamples=200)
    assert bleu["difference"] == pytest.approx(BLEU().corpus_score(good, [[r[0] for r in references]]).score
                                               - BLEU().corpus_score(bad, [[r[0] for r in references]]).score)
    near = good[:-1] + ["we are"]  # one sentence of twenty differs
    assert bleu["p_value"] < 0.05 and paired_bleu(near, good, references, resamples=200)["p_value"] > 0.05


def test_the_ablation_verdict_flips_when_the_numbers_swap():
    runs = [_record("a1", "a", 0.80, 0), _record("a2", "a", 0.81, 1), _record("b1", "b", 0.60, 0),
            _record("b2", "b", 0.62, 1)]

    def word(records, expect=None):
        return compare_arms("val_accuracy", "b", "a", _arms(records), {}, [], expect)["verdict"]

    assert word(runs) == "lower" and word(runs, "higher") == "contradicted"
    swapped = [_record(r.name, "b" if r.arm == "a" else "a", r.values["val_accuracy"], r.seed)
               for r in runs]
    assert word(swapped) == "higher" and word(swapped, "higher") == "supported"
    close = [_record("a1", "a", 0.80, 0), _record("a2", "a", 0.84, 1), _record("b1", "b", 0.81, 0),
             _record("b2", "b", 0.83, 1)]
    assert word(close) == "no clear difference"


SWEEP = {"sweep": {"model": "cls", "question": "Q?", "metrics": ["val_accuracy"], "design": "sweep",
                   "sweep": "lr", "choose_on": "val_accuracy", "budget": "b", "base": {"lr": 0.15},
                   "runs": {"lr0.05": {"lr": 0.05}, "lr0.15": {"lr": 0.15}, "lr0.5": {"lr": 0.5},
                            "lr2.0": {"lr": 2.0}}}}


def _sweep(values, borrowed=0.01, diverged=(), exploratory=False):
    spec = copy.deepcopy(SWEEP)
    spec["sweep"]["exploratory"] = exploratory
    experiment = parse_experiments(spec, REPO / "x.yaml")[0]
    records = [_record(f"lr{lr}", f"lr{lr}", v, 0, f"lr{lr}" in diverged, lr) for lr, v in values.items()]
    arms = {str(r.config["lr"]): [r] for r in records}
    comparisons = []
    for r in records:
        if r.config["lr"] != 0.15:
            c = compare_arms("val_accuracy", str(r.config["lr"]), "0.15", arms, {},
                             [{"source": "seeds", "recipe": None, "machines": [],
                               "metrics": {"val_accuracy": {"sd": borrowed, "n": 3}}}], "higher")
            c["verdict"] = {"supported": "better", "contradicted": "worse"}.get(c["verdict"], c["verdict"])
            comparisons.append({"value": r.config["lr"], "mean": r.values["val_accuracy"], **c})
    return sweep_answer(experiment, records, comparisons)


def test_a_sweep_chooses_only_beyond_the_noise_and_says_whether_it_bracketed_its_best():
    bracketed = _sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.80, 2.0: 0.65})
    assert bracketed["best"] == 0.5 and bracketed["bracket"] == "bracketed"
    assert bracketed["changed"] and bracketed["chosen_value"] == 0.5
    tie = _sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.705, 2.0: 0.65})  # best, but inside the noise: the default stays
    assert tie["best"] == 0.5 and not tie["changed"] and tie["chosen_value"] == 0.15
    edge = _sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.75, 2.0: 0.90})
    assert edge["best"] == 2.0 and edge["bracket"] == "high edge"
    unstable = _sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.75, 2.0: 0.90}, diverged=("lr2.0",))
    assert unstable["best"] == 0.5 and unstable["diverged"] == ["lr2.0"]


def test_an_exploratory_sweep_reports_its_best_value_and_chooses_nothing():
    lead = _sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.80, 2.0: 0.65}, exploratory=True)
    assert lead["best"] == 0.5 and lead["exploratory"]
    assert not lead["changed"] and lead["chosen_value"] == 0.15


def test_a_sweeps_choice_is_one_at_its_own_budget_on_the_index_and_the_claims_table():
    from pipeline.report.pages import environment

    sweep = environment().get_template("experiments/designs/sweep.md.j2").module
    e = {"answer": {**_sweep({0.05: 0.60, 0.15: 0.70, 0.5: 0.75, 2.0: 0.90}), "field": "lr"}}
    for cell in (sweep.index_cell(e), sweep.claim_cell(e)):  # not today's default: a proxy's choice, unconfirmed
        assert "chose lr = 2.0 at this budget, to be confirmed at full budget" in cell


def test_holm_adjusts_a_family_and_a_verdict_only_survives_below_the_level():
    from pipeline.compare.stats import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3 * 0.01, max(2 * 0.03, 0.04 * 1)
    assert holm([0.2]) == [0.2]

    def comparison(p, verdict):
        return {"metrics": [{"interval": {"p_value": p}, "verdict": verdict}], "verdict": verdict}

    family = correct_family([comparison(0.001, "better"), comparison(0.026, "worse"), comparison(0.5, "no clear "
                                                                                                  "difference")])
    assert [c["verdict"] for c in family] == ["better", "no clear difference", "no clear difference"]
    assert family[1]["metrics"][0]["interval"] == {"p_value": 0.026, "p_holm": 0.052, "family": 3}


def test_a_run_slowed_by_a_shared_host_costs_what_its_epochs_typically_cost():
    from pipeline.compare.timing import typical_train_s

    def run(folder, sides, slow=1.0, cpu="Xeon", precision="bf16"):
        seconds = {16: 130, 32: 260}
        return _run(folder, provenance={"cpu": cpu, "cpu_family": 6, "cpu_model": 167, "device": "cpu",
                                        "precision": precision},
                    epoch_seconds=tuple(EpochTime(s, slow * seconds[s], 10) for s in sides))

    runs = [run("short", [16, 32]), run("long", [16, 16, 32, 32]), run("slowed", [16, 32], slow=2.0),
            run("other", [16, 32], slow=3.0, precision="fp32")]
    typical = typical_train_s(runs)
    assert typical["short"] == typical["slowed"] == 130 + 260 + 2 * 10  # the slowed run is the short one's recipe
    assert typical["long"] == 2 * 130 + 2 * 260 + 4 * 10
    assert typical["other"] == 3 * (130 + 260) + 2 * 10  # another precision pools with no one
    runs[0] = dataclasses.replace(runs[0], epoch_seconds=(EpochTime(16, None, 10), EpochTime(32, 260, 10)))
    assert typical_train_s(runs)["short"] is None


def test_a_sweep_must_include_its_default(tmp_path):
    data = copy.deepcopy(SWEEP)
    del data["sweep"]["runs"]["lr0.15"]
    with pytest.raises(PipelineError, match="a sweep must include the default lr = 0.15"):
        parse_experiments(data, tmp_path / "x.yaml")


def test_deletion_curves_fall_fastest_where_the_model_looks():
    """A model whose confidence is the share of the left half it still sees: a map on the left half is faithful."""
    from pipeline.evaluate.analyses import deletion_curves

    images = torch.ones(6, 3, 8, 8)

    def predict(x):
        seen = x[:, 0, :, :4].mean(dim=(1, 2))
        return torch.stack([seen, 1 - seen], dim=1)

    faithful = np.zeros((6, 8, 8))
    faithful[:, :, :4] = 1 + np.random.default_rng(0).random((6, 8, 4))
    result = deletion_curves(predict, images, faithful, torch.zeros(6, dtype=torch.long), patch=2)
    assert result["area_between"]["random_minus_salient"]["mean"] > 0.1
    assert result["area_between"]["least_minus_salient"]["mean"] > 0.2
    backwards = deletion_curves(predict, images, faithful.max() - faithful, torch.zeros(6, dtype=torch.long), patch=2)
    assert backwards["area_between"]["random_minus_salient"]["mean"] < -0.1


def test_gradient_norms_cover_every_layer_of_the_four_networks():
    from pipeline.evaluate.analyses import gradient_norms

    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    result = gradient_norms(x, y, iter([(x, y)] * 2), steps=2)
    layers = {name: len(v) for name, v in result["networks"].items()}
    # The stem and every block: 1 + 8 for 18 layers, 1 + 16 for 34, with or without shortcuts.
    assert layers == {"ResNet-18 (residual)": 9, "ResNet-18 plain": 9, "ResNet-34 (residual)": 17,
                      "ResNet-34 plain": 17}
    assert all(v["init"] > 0 and v["trained"] > 0 for vs in result["networks"].values() for v in vs)


def _write_run(root, name, seed, accuracy, precision="fp32", shortcuts=True, commit="abc"):
    from pipeline.config import make_config
    from pipeline.io import write_json

    folder = root / "runs" / "cls" / name
    config = make_config("cls", "full", {"epochs": 1, "seed": seed, "shortcuts": shortcuts})  # as GOOD declares
    write_json(folder / "config.json", {"model": "cls", **dataclasses.asdict(config)})
    write_json(folder / "provenance.json", {"git_commit": commit, "precision": precision, "processes": 1,
                                            "device": "cpu", "cpu": "AMD EPYC", "cpu_family": 25, "cpu_model": 1,
                                            "threads": 2})
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 2.0, "val_accuracy": accuracy,
                                                      "loss_trace": [[25, 2.1], [50, 1.9]]}) + "\n")
    write_json(folder / "final.json", {"test_accuracy": accuracy, "test_images": 4, "train_wall_s": 1.0})


def test_a_page_shows_runs_whose_provenance_differs_and_the_verdict_of_the_rule(tmp_path):
    from pipeline.compare.experiments import compare_experiment
    from pipeline.config import Paths
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    experiment = parse_experiments(copy.deepcopy(GOOD), tmp_path / "x.yaml")[0]
    experiment = dataclasses.replace(experiment, runs=[
        dataclasses.replace(experiment.runs[0], name="a0", folder="tiny-a0", overrides={"epochs": 1, "seed": 0}),
        dataclasses.replace(experiment.runs[0], name="a1", folder="tiny-a1", overrides={"epochs": 1, "seed": 1}),
        dataclasses.replace(experiment.runs[1], name="b0", folder="tiny-b0",
                            overrides={"epochs": 1, "seed": 0, "shortcuts": False}),
        dataclasses.replace(experiment.runs[1], name="b1", folder="tiny-b1",
                            overrides={"epochs": 1, "seed": 1, "shortcuts": False})])
    _write_run(tmp_path, "tiny-a0", 0, 0.80)
    _write_run(tmp_path, "tiny-a1", 1, 0.82)
    _write_run(tmp_path, "tiny-b0", 0, 0.60, shortcuts=False)
    _write_run(tmp_path, "tiny-b1", 1, 0.61, precision="bf16", shortcuts=False)
    result = compare_experiment(Paths(tmp_path), experiment)
    assert result["differing_provenance"] == ["precision"] and result["varied_fields"] == ["shortcuts"]
    assert result["comparisons"][0]["verdict"] == "lower"  # b against a, paired over seeds 0 and 1
    assert result["runs"][0]["loss_trace"] == [[25, 2.1], [50, 1.9]]
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**result, "figures": {}}, assets="../../assets")
    assert "their provenance differs in `precision`" in page
    assert "| bf16 |" in page and "| fp32 |" in page
    assert "differ in `shortcuts` and in nothing else" in page
    assert "| b against a | val_accuracy |" in page and "**lower**" in page
    assert "\n\n## Answer\n" in page  # a heading, not a paragraph's last line, with or without caveats


def test_a_confirmatory_experiment_gives_no_verdict_until_every_declared_run_has_finished(tmp_path):
    from pipeline.compare.experiments import compare_experiment
    from pipeline.config import Paths
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    spec = copy.deepcopy(GOOD)
    spec["tiny"]["confirmatory"] = True
    spec["tiny"]["runs"] = {"a0": {"arm": "a", "seed": 0}, "a1": {"arm": "a", "seed": 1},
                            "b0": {"arm": "b", "shortcuts": False, "seed": 0},
                            "b1": {"arm": "b", "shortcuts": False, "seed": 1}}
    experiment = parse_experiments(spec, tmp_path / "x.yaml")[0]
    _write_run(tmp_path, "tiny-a0", 0, 0.80)
    _write_run(tmp_path, "tiny-a1", 1, 0.82)
    _write_run(tmp_path, "tiny-b0", 0, 0.60, shortcuts=False)
    held = compare_experiment(Paths(tmp_path), experiment)
    assert held["answer"]["kind"] == "held" and held["comparisons"] == [] and len(held["runs"]) == 3
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**held, "figures": {}}, assets="../../assets")
    assert "until all 4 of them have finished (3 so far)" in page and "| b against a |" not in page
    _write_run(tmp_path, "tiny-b1", 1, 0.61, shortcuts=False)
    done = compare_experiment(Paths(tmp_path), experiment)
    assert done["answer"]["kind"] == "ablation" and done["comparisons"][0]["verdict"] == "lower"


def test_a_run_from_uncommitted_changes_counts_only_in_a_draft_report(tmp_path, monkeypatch):
    from pipeline.compare.experiments import compare_all, compare_experiment
    from pipeline.compare.records import COUNT_UNCOMMITTED
    from pipeline.config import Paths
    from pipeline.figures.build import build_experiments
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    experiment = parse_experiments(copy.deepcopy(GOOD), tmp_path / "x.yaml")[0]
    _write_run(tmp_path, "tiny-a", 0, 0.80)
    _write_run(tmp_path, "tiny-b", 0, 0.60, shortcuts=False, commit="abc-dirty")
    monkeypatch.setenv(COUNT_UNCOMMITTED, "0")
    result = compare_experiment(Paths(tmp_path), experiment)
    assert [r["folder"] for r in result["runs"]] == ["tiny-a"] and not result["comparisons"]
    assert [r["folder"] for r in result["uncounted"]] == ["tiny-b"]
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**result, "figures": {}}, assets="../../assets")
    assert "1 of 2 planned runs have finished and count" in page and "**Not counted:** `tiny-b`" in page
    assert "--name tiny-b" in page  # how to train it again
    stale = tmp_path / "site_assets" / "experiments" / "gone.png"  # of an experiment with no run that counts
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    compare_all(Paths(tmp_path), [experiment])
    index = json.loads((tmp_path / "site_assets" / "experiments" / "index.json").read_text())
    assert index["uncounted"] == {"tiny": [{"folder": "tiny-b", "reason": "uncommitted"}]}
    assert [f["path"] for f in build_experiments(Paths(tmp_path))] == ["experiments/tiny.png"]
    assert not stale.exists()
    monkeypatch.setenv(COUNT_UNCOMMITTED, "1")
    result = compare_experiment(Paths(tmp_path), experiment)
    assert len(result["runs"]) == 2 and not result["uncounted"] and result["comparisons"]


def test_a_run_trained_off_the_declared_machine_does_not_count_and_the_page_says_where_it_trained(tmp_path):
    from pipeline.compare.experiments import compare_experiment
    from pipeline.config import Paths
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    data = copy.deepcopy(GOOD)
    data["tiny"]["machine"] = {"device": "cpu", "cpu_family": 25, "cpu_model": 1, "precision": "fp32"}
    experiment = parse_experiments(data, tmp_path / "x.yaml")[0]
    _write_run(tmp_path, "tiny-a", 0, 0.80)  # AMD EPYC family 25 model 1, fp32: where it is declared
    _write_run(tmp_path, "tiny-b", 0, 0.60, precision="bf16", shortcuts=False)
    result = compare_experiment(Paths(tmp_path), experiment)
    assert [r["folder"] for r in result["runs"]] == ["tiny-a"] and not result["comparisons"]
    assert [(u["folder"], u["reason"]) for u in result["uncounted"]] == [("tiny-b", "machine")]
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**result, "figures": {}}, assets="../../assets")
    assert "declared to train on a CPU of family 25, model 1, device cpu, in fp32" in page
    assert ("**Not counted:** `tiny-b`, trained on AMD EPYC (family 25, model 1), cpu, bf16, not where this "
            "experiment declares its runs. A run counts once trained again on the declared machine") in page
    _write_run(tmp_path, "tiny-b", 0, 0.60, shortcuts=False)  # trained again where it is declared
    assert compare_experiment(Paths(tmp_path), experiment)["comparisons"]


def test_make_experiments_leaves_a_run_declared_for_another_cpu_kind_for_that_kind(tmp_path, monkeypatch, capsys):
    import pipeline.train
    from pipeline.config import Paths
    from pipeline.experiments import running

    data = copy.deepcopy(GOOD)
    data["tiny"]["machine"] = {"cpu_family": 6, "cpu_model": 167, "precision": "bf16"}
    experiments = parse_experiments(data, tmp_path / "x.yaml")
    trained = []
    monkeypatch.setattr(pipeline.train, "train", lambda model, config, run_dir, *a, **k: trained.append(run_dir.name))
    monkeypatch.setattr(running, "cpu_ids", lambda: {"cpu_vendor": "AuthenticAMD", "cpu_family": 25, "cpu_model": 17})
    running.train_missing(Paths(tmp_path), experiments)
    out = capsys.readouterr().out
    assert trained == [] and "no experiment run is left to train here" in out
    assert ("tiny: tiny-a is not trained here: experiments.yaml declares its runs with cpu_family 6, cpu_model 167, "
            "and this machine has cpu_family 25, cpu_model 17; it waits for such a machine.") in out
    monkeypatch.setattr(running, "cpu_ids", lambda: {"cpu_vendor": "GenuineIntel", "cpu_family": 6, "cpu_model": 167})
    running.train_missing(Paths(tmp_path), experiments)  # bf16 is checked when compared: "auto" settles it later
    assert trained == ["tiny-a", "tiny-b"]


def test_a_run_trained_with_another_config_than_declared_is_an_error_naming_its_folder_and_fields(tmp_path):
    from pipeline.compare.experiments import compare_experiment
    from pipeline.config import Paths

    experiment = parse_experiments(copy.deepcopy(GOOD), tmp_path / "x.yaml")[0]
    _write_run(tmp_path, "tiny-a", 0, 0.80)
    _write_run(tmp_path, "tiny-b", 0, 0.60, shortcuts=False)
    assert compare_experiment(Paths(tmp_path), experiment)["comparisons"]
    # The declaration changes (as when a default changes) after the run was trained: its numbers no longer answer
    # what the page would say they answer.
    spec = copy.deepcopy(GOOD)
    spec["tiny"]["runs"]["b"] = {"shortcuts": False, "depth": 34}
    changed = parse_experiments(spec, tmp_path / "x.yaml")[0]
    with pytest.raises(PipelineError, match=r"tiny-b/config.json: experiments.yaml declares run 'b' of experiment "
                                            r"'tiny' with depth = 34, but .* trained with depth = 18"):
        compare_experiment(Paths(tmp_path), changed)


def test_padding_sentences_follow_the_numbers_by_the_rule():
    from pipeline.compare.experiments import padding_sentences

    def run(seed, padded, alone, changed, sentences=500):
        return _run(f"s{seed}", seed=seed, values={"test_bleu": padded, "test_bleu_alone": alone},
                    changed_by_padding=changed, test_sentences=sentences)

    # Each seed draws its own test sentences, so each run's count is given with its own total.
    lowered = padding_sentences({"no-source-padding": [run(0, 30.1, 38.0, 200), run(1, 31.0, 38.4, 210, 505),
                                                       run(2, 29.5, 37.9, 190, 498)]})
    assert lowered[0].startswith("no-source-padding: test BLEU 30.20 decoded in padded batches and 38.10 one "
                                 "sentence at a time")
    assert "changed 200 of 500, 210 of 505 and 190 of 498 outputs (seeds 0, 1, 2)" in lowered[0]
    assert "padding lowers the score (" in lowered[0] and "paired t over 3 shared seeds" in lowered[0]
    noisy = padding_sentences({"both-masks": [run(0, 38.0, 38.0, 0), run(1, 39.0, 38.5, 3), run(2, 37.0, 37.6, 2)]})
    assert "no clear difference" in noisy[0]
    assert "stays open" in padding_sentences({"one": [run(0, 30.0, 38.0, 100)]})[0]
    assert padding_sentences({"old": [_run("old", values={"test_bleu": 30.0})]}) == []


GRID = {"dec": {"model": "mt", "question": "Q?", "metrics": ["val_bleu"], "design": "decoding",
                "budget": "inference only", "decoding": {"beam_size": [0, 4, 8], "length_penalty": [0.6, 1.0]},
                "runs": {"s0": {"seed": 0}, "s1": {"seed": 1}, "s2": {"seed": 2}}}}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["dec"]["decoding"].update(length_penalty=[1.0]), r"field 'decoding': the grid must include the "
                                                                    r"recipe's own beam_size and length_penalty"),
    (lambda d: d["dec"]["decoding"].update(beam_size=[4, "wide"]), r"field 'decoding': must be \{beam_size"),
    (lambda d: d["dec"].update(decoding={"beam_size": [4]}), r"field 'decoding': must be \{beam_size"),
    (lambda d: d["dec"]["runs"]["s2"].update(epochs=3), r"field 'runs': the runs of a decoding experiment must "
                                                        r"share one recipe"),
    (lambda d: d["dec"].update(metrics=["test_bleu", "val_bleu"]), r"chooses on val_bleu"),
    (lambda d: d.update(other={**GOOD["tiny"], "decoding": {"beam_size": [4], "length_penalty": [0.6]}}),
     r"experiment 'other', field 'decoding': only an experiment of design decoding"),
])
def test_a_bad_decoding_experiment_names_the_file_and_the_field(tmp_path, change, message):
    data = copy.deepcopy(GRID)
    change(data)
    with pytest.raises(PipelineError, match=message):
        parse_experiments(data, tmp_path / "x.yaml")


def _write_finished_run(root, model: str, folder: str, overrides: dict, cpu: tuple, epoch: dict, final: dict):
    """A finished run's own files: its config (the default with overrides), provenance on a CPU (name, family,
    model), one epoch's metrics and its final scores."""
    from pipeline.config import make_config
    from pipeline.io import write_json

    run = root / "runs" / model / folder
    write_json(run / "config.json", {"model": model, **dataclasses.asdict(make_config(model, "full", overrides))})
    write_json(run / "provenance.json", {"git_commit": "abc", "precision": "bf16", "processes": 1, "device": "cpu",
                                         "cpu": cpu[0], "cpu_family": cpu[1], "cpu_model": cpu[2], "threads": 2})
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 2.0, **epoch}) + "\n")
    write_json(run / "final.json", {**final, "train_wall_s": 1.0})
    return run


def _write_decoded_run(root, folder, seed, better: bool):
    """A finished Transformer run of the default recipe and its validation decodes: every setting translates
    half of 40 sentences right, except beam 8 with alpha 1.0, which gets all of them right when `better`, and
    none when not."""
    from pipeline.io import write_json

    run = _write_finished_run(root, "mt", folder, {"seed": seed}, ("Intel Xeon", 6, 167), {"val_bleu": 30.0},
                              {"test_bleu": 30.0})
    references = [[f"sentence {i} of seed {seed} says something longer than four words"] for i in range(40)]
    half = [r[0] if i % 2 else "no words in common" for i, r in enumerate(references)]
    settings = {}
    for beam, alpha in ((0, 0.0), (4, 0.6), (4, 1.0), (8, 0.6), (8, 1.0)):
        key = "greedy" if beam == 0 else f"beam {beam}, alpha {alpha:g}"
        hypotheses = ([r[0] for r in references] if better else ["none"] * 40) if key == "beam 8, alpha 1" else half
        settings[key] = {"beam_size": beam, "length_penalty": alpha, "hypotheses": hypotheses, "git_commit": "abc",
                         "val_bleu": paired_bleu(hypotheses, half, references, resamples=10)["difference"] + 50}
    write_json(run / "decoding.json", {"tokenize": "13a", "sources": [f"s{i}" for i in range(40)],
                                       "references": references, "settings": settings,
                                       "provenance": {"cpu": "Intel Xeon", "cpu_family": 6, "cpu_model": 167}})


@pytest.mark.parametrize("better", [True, False])
def test_a_decoding_setting_is_chosen_only_when_it_beats_the_default_by_the_rule(tmp_path, better, monkeypatch):
    from pipeline.compare.experiments import compare_all, compare_experiment
    from pipeline.compare.records import COUNT_UNCOMMITTED
    from pipeline.config import Paths
    from pipeline.figures.build import build_experiments
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    experiment = parse_experiments(copy.deepcopy(GRID), tmp_path / "x.yaml")[0]
    for seed in range(3):
        _write_decoded_run(tmp_path, f"dec-s{seed}", seed, better)
    result = compare_experiment(Paths(tmp_path), experiment)
    answer, verdicts = result["answer"], {c["arm"]: c["verdict"] for c in result["comparisons"]}
    assert answer["default"] == "beam 4, alpha 0.6" and answer["decoded_runs"] == 3 and result["complete"]
    assert verdicts["beam 8, alpha 1"] == ("better" if better else "worse")
    assert {v for k, v in verdicts.items() if k != "beam 8, alpha 1"} == {"no clear difference"}
    assert answer["changed"] == better
    assert answer["chosen_value"] == ("beam 8, alpha 1" if better else "beam 4, alpha 0.6")
    chosen = next(c for c in result["comparisons"] if c["arm"] == "beam 8, alpha 1")["metrics"][0]
    assert [t["seed"] for t in chosen["seed_tests"]] == [0, 1, 2] and all(t["p_value"] < 0.05
                                                                           for t in chosen["seed_tests"])
    assert answer["table"][0]["cells"][1] is None  # greedy has no length penalty: one cell
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**result, "figures": {}}, assets="../../assets")
    assert "| 4 | 50.00 (default) | 50.00 |" in page
    assert ("**beam 8, alpha 1 beats the default by the rule**" in page) == better
    assert ("**No setting beat the default by the rule**" in page) != better
    assert "| beam 4, alpha 1 | +0.00 |" in page and "| — | **no clear difference** |" in page
    assert ("| paired bootstrap, by seed: 0: p ≤ 0.001, 1: p ≤ 0.001, 2: p ≤ 0.001 | **"
            + ("better" if better else "worse")) in page
    assert "Decoded at commit `abc` on Intel Xeon (family 6, model 167)." in page
    compare_all(Paths(tmp_path), [experiment])
    assert [f["id"] for f in build_experiments(Paths(tmp_path))] == ["exp_dec_grid"]
    dirty = tmp_path / "runs" / "mt" / "dec-s2" / "decoding.json"  # decoded from uncommitted changes: not counted
    dirty.write_text(dirty.read_text().replace('"git_commit": "abc"', '"git_commit": "abc-dirty"', 1))
    monkeypatch.setenv(COUNT_UNCOMMITTED, "0")
    assert compare_experiment(Paths(tmp_path), experiment)["answer"]["decoded_runs"] == 2
    dirty.unlink()  # a run not decoded yet: not complete
    assert not compare_experiment(Paths(tmp_path), experiment)["complete"]



VIEWS_GRID = {"views": {"model": "cls", "question": "Q?", "metrics": ["val_accuracy"], "design": "views",
                        "budget": "inference only", "views": {"shift": [0, 1, 2]},
                        "runs": {"s0": {"seed": 0}, "s1": {"seed": 1}, "s2": {"seed": 2}}}}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["views"]["views"].update(shift=[1, 2]), r"field 'views': the grid must include the recipe's own "
                                                         r"views"),
    (lambda d: d["views"]["views"].update(shift=[0, "one"]), r"field 'views': must be \{shift"),
    (lambda d: d["views"].update(views={"shift": [0], "scale": [1]}), r"field 'views': must be \{shift"),
    (lambda d: d["views"]["runs"]["s2"].update(epochs=3), r"field 'runs': the runs of a views experiment "
                                                                  r"must share one recipe"),
    (lambda d: d["views"].update(metrics=["test_accuracy", "val_accuracy"]), r"chooses on val_accuracy"),
    (lambda d: d["views"].update(model="mt", metrics=["val_bleu"]), r"field 'model': a views experiment scores "
                                                                     r"ResNet runs"),
    (lambda d: d.update(other={**GOOD["tiny"], "views": {"shift": [0]}}),
     r"experiment 'other', field 'views': only an experiment of design views"),
])
def test_a_bad_views_experiment_names_the_file_and_the_field(tmp_path, change, message):
    data = copy.deepcopy(VIEWS_GRID)
    change(data)
    with pytest.raises(PipelineError, match=message):
        parse_experiments(data, tmp_path / "x.yaml")


def _write_viewed_run(root, folder, seed, better: bool):
    """A finished ResNet run of the default recipe and its validation scores with each setting of views: 400
    images, of which every setting gets 300 right, except the mirror shifted by 2 pixels, which gets 340 right when
    `better`, and 260 when not."""
    from pipeline.io import write_json

    run = _write_finished_run(root, "cls", folder, {"seed": seed}, ("AMD EPYC", 25, 17), {"val_accuracy": 0.75},
                              {"test_accuracy": 0.75})
    settings = {}
    for key, mirror, shift in (("image alone", False, 0), ("mirror", True, 0), ("mirror + shift 1", True, 1),
                               ("mirror + shift 2", True, 2)):
        wrong = 60 if key == "mirror + shift 2" and better else 140 if key == "mirror + shift 2" else 100
        settings[key] = {"mirror": mirror, "shift": shift, "passes": 6 if shift else 2 if mirror else 1,
                         "val_accuracy": 1 - (wrong + seed) / 400, "val_loss": 0.5,
                         "wrong": list(range(wrong + seed)), "seconds": 0.4 * (6 if shift else 2 if mirror else 1),
                         "git_commit": "abc"}
    write_json(run / "views.json", {"images": 400, "split_sha": "x", "settings": settings,
                                    "provenance": {"cpu": "AMD EPYC", "cpu_family": 25, "cpu_model": 17}})


@pytest.mark.parametrize("better", [True, False])
def test_a_views_setting_is_chosen_only_when_it_beats_the_recipes_own_by_the_rule(tmp_path, better, monkeypatch):
    from pipeline.compare.experiments import compare_all, compare_experiment
    from pipeline.compare.records import COUNT_UNCOMMITTED
    from pipeline.config import Paths
    from pipeline.report.pages import EXPERIMENT_PAGE, environment

    experiment = parse_experiments(copy.deepcopy(VIEWS_GRID), tmp_path / "x.yaml")[0]
    for seed in range(3):
        _write_viewed_run(tmp_path, f"views-s{seed}", seed, better)
    result = compare_experiment(Paths(tmp_path), experiment)
    answer, verdicts = result["answer"], {c["arm"]: c["verdict"] for c in result["comparisons"]}
    assert answer["default"] == "mirror" and answer["scored_runs"] == 3 and result["complete"]
    assert verdicts == {"image alone": "no clear difference", "mirror + shift 1": "no clear difference",
                        "mirror + shift 2": "better" if better else "worse"}
    assert answer["changed"] == better
    assert answer["chosen_value"] == ("mirror + shift 2" if better else "mirror")
    chosen = next(c for c in result["comparisons"] if c["arm"] == "mirror + shift 2")["metrics"][0]
    assert [t["seed"] for t in chosen["seed_tests"]] == [0, 1, 2] and all(t["p_value"] < 0.05
                                                                           for t in chosen["seed_tests"])
    page = environment().get_template(EXPERIMENT_PAGE).render(e={**result, "figures": {}}, assets="../../assets")
    assert "| mirror (default) | 74.75% | 2 | 2.00 |" in page and "| mirror + shift 1 | 74.75% | 6 | 6.00 |" in page
    assert ("**mirror + shift 2 beats the default by the rule**" in page) == better
    assert ("**No setting beat the default by the rule**" in page) != better
    assert ("| McNemar, by seed: 0: 1.8e-12, 1: 1.8e-12, 2: 1.8e-12 | **" + ("better" if better else "worse")) in page
    assert "Scored at commit `abc` on AMD EPYC (family 25, model 17)." in page
    compare_all(Paths(tmp_path), [experiment])
    dirty = tmp_path / "runs" / "cls" / "views-s2" / "views.json"  # scored from uncommitted changes: not counted
    dirty.write_text(dirty.read_text().replace('"git_commit": "abc"', '"git_commit": "abc-dirty"', 1))
    monkeypatch.setenv(COUNT_UNCOMMITTED, "0")
    assert compare_experiment(Paths(tmp_path), experiment)["answer"]["scored_runs"] == 2
    dirty.unlink()  # a run not scored yet: not complete
    assert not compare_experiment(Paths(tmp_path), experiment)["complete"]


def test_a_single_run_borrows_the_spread_of_its_recipes_seeds_experiment_else_the_one_with_the_most_seeds(tmp_path):
    """An arm compared against a recipe whose seeds experiment has 3 seeds or more borrows that experiment's spread;
    against any other recipe, the spread of the seeds experiment with the most seeds (the first on a tie)."""
    from pipeline.compare.arms import lent_spread, seed_spreads
    from pipeline.compare.records import finished_runs
    from pipeline.config import Paths

    def seeds(epochs, n):
        return {"model": "cls", "question": "Q?", "metrics": ["test_accuracy"], "design": "seeds", "budget": "b",
                "base": {"epochs": epochs}, "runs": {f"s{i}": {"seed": i} for i in range(n)}}

    def finish(folder, seed, epochs, accuracy):
        _write_finished_run(tmp_path, "cls", folder, {"seed": seed, "epochs": epochs}, ("CPU", 6, 167), {},
                            {"test_accuracy": accuracy})

    screen = {"model": "cls", "question": "Q?", "metrics": ["test_accuracy"], "design": "ablation",
              "control": "six", "budget": "b",
              "runs": {"six": {"arm": "six", "seed": 9, "epochs": 6}, "five": {"arm": "five", "seed": 9, "epochs": 5},
                       "eight": {"arm": "eight", "seed": 9, "epochs": 8}}}
    experiments = parse_experiments({"today": seeds(7, 4), "earlier": seeds(6, 3), "screen": screen},
                                    tmp_path / "x.yaml")
    for i, accuracy in enumerate([0.88, 0.89, 0.90]):
        finish(f"earlier-s{i}", i, 6, accuracy)
    for i, accuracy in enumerate([0.90, 0.94]):
        finish(f"today-s{i}", i, 7, accuracy)
    for folder, epochs in (("screen-six", 6), ("screen-five", 5), ("screen-eight", 8)):
        finish(folder, 9, epochs, 0.9)
    arms = by_arm(finished_runs(Paths(tmp_path), experiments[2])[0])

    def lent(against):
        return lent_spread(seed_spreads(Paths(tmp_path), experiments)["cls"], "test_accuracy", arms[against])

    assert (lent("six")["source"], lent("six")["n"]) == ("earlier", 3) and lent("six")["sd"] == pytest.approx(0.01)
    assert lent("five")["source"] == "earlier"  # no seeds experiment of its recipe: the one with the most seeds
    finish("today-s2", 2, 7, 0.92)  # as many seeds as the earlier default's: today's, first in the file, lends
    assert (lent("five")["source"], lent("five")["n"]) == ("today", 3)
    assert lent("six")["source"] == "earlier"  # the recipe's own still lends, though no longer the most seeds
    finish("today-s3", 3, 7, 0.93)
    assert lent("six")["source"] == "earlier" and lent("eight")["source"] == "today"


def test_the_comparison_figure_and_page_stages_import_no_torch():
    """They read only the files the stages before them wrote, so they run, and stay fast, without torch."""
    import subprocess
    import sys

    code = ("import sys, pipeline.compare.experiments, pipeline.figures.build, pipeline.report.pages; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_main_run_trained_on_another_machine_gets_a_reproduction_verdict_and_the_committed_one_none():
    from pipeline.compare.stats import prediction_interval
    from pipeline.report.pages import environment

    experiment = [e for e in load_experiments(REPO / "experiments.yaml") if e.name == "seeds-mt"][0]

    def run(folder, bleu, family):
        return _run(folder, values={"test_bleu": bleu},
                    provenance={"cpu": "CPU", "cpu_family": family, "cpu_model": 1, "device": "cpu",
                                "precision": "bf16"})

    def reproduction(experiment, records):
        return DESIGNS["seeds"].reproduction(Evidence(experiment, records, by_arm(records), {}, {}, {}, {}))

    seeds = [run(f"s{i}", v, 6) for i, v in enumerate([45.0, 46.0, 44.0, 45.5])]
    low, high = prediction_interval([45.0, 46.0, 44.0, 45.5])
    half = 3.182 * np.std([45.0, 46.0, 44.0, 45.5], ddof=1) * math.sqrt(1 + 1 / 4)  # t(0.975, 3)
    assert (low, high) == pytest.approx((45.125 - half, 45.125 + half), rel=1e-3)
    assert reproduction(experiment, [run("main", 45.2, 6), *seeds]) is None  # trained where its seeds were
    inside = reproduction(experiment, [run("main", 45.2, 25), *seeds])
    outside = reproduction(experiment, [run("main", high + 0.5, 25), *seeds])
    assert inside["inside"] and not outside["inside"] and inside["runs"] == 4
    assert "(family 25, model 1), cpu, bf16" in inside["machine"]

    macro = environment().from_string('{% from "_macros.j2" import reproduced %}{{ reproduced(e, "mt") }}')
    page = " ".join(macro.render(e={"seeds-mt": {"model": "mt", "reproduction": outside}}).split())
    assert "falls **outside** the 95 % prediction interval" in page and "does not reproduce" in page
    assert macro.render(e={"seeds-mt": {"model": "mt", "reproduction": None}}) == ""


def test_a_result_file_missing_a_key_is_refused_in_one_paragraph_naming_it(tmp_path):
    from pipeline.compare.experiments import compare_all, experiment_results
    from pipeline.config import Paths

    experiment = parse_experiments(copy.deepcopy(GOOD), tmp_path / "x.yaml")[0]
    _write_run(tmp_path, "tiny-a", 0, 0.80)
    _write_run(tmp_path, "tiny-b", 0, 0.60, shortcuts=False)
    compare_all(Paths(tmp_path), [experiment])
    assert [r["name"] for r in experiment_results(Paths(tmp_path))] == ["tiny"]
    path = tmp_path / "site_assets" / "experiments" / "tiny.json"
    good = json.loads(path.read_text())
    for broken, where, what in ((lambda r: r.pop("answer"), "at the top level", "'answer' is a required property"),
                                (lambda r: r["runs"][1].pop("seed"), "at runs/1", "'seed' is a required property"),
                                (lambda r: r["answer"].update(kind="poll"), "at answer/kind", "'poll' is not one of")):
        result = copy.deepcopy(good)
        broken(result)
        path.write_text(json.dumps(result))
        with pytest.raises(PipelineError) as caught:
            experiment_results(Paths(tmp_path))
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and where in message and what in message and "\n" not in message
        assert json.loads(path.read_text()) == result  # reading it changed nothing


def test_every_committed_result_holds_the_schema_and_every_design_has_one():
    from pipeline.compare.experiments import experiment_results
    from pipeline.config import Paths
    from tests.conftest import committed_report_root

    assert {r["design"] for r in experiment_results(Paths(committed_report_root()))} == set(DESIGNS)


def test_designs_are_told_apart_in_the_registry_alone():
    """A design is one class (pipeline/experiments/designs.py) and one partial: no other module or template tests
    a design's name, each partial defines what the pages call, and every figure a design asks for exists."""
    import re

    from pipeline.figures.build import PLOTS

    names = "|".join(DESIGNS)
    test = re.compile(rf"""design["'\]]*\s*(==|!=|in\s*[(\[])|\.kind\s*==\s*["']({names})["']""")
    sources = [p for p in (REPO / "pipeline").rglob("*") if p.suffix in (".py", ".j2") and p.name != "designs.py"]
    offending = [f"{p.relative_to(REPO)}:{i}" for p in sources
                 for i, line in enumerate(p.read_text().splitlines(), 1) if test.search(line)]
    assert not offending
    for name, design in DESIGNS.items():
        partial = (REPO / "pipeline" / "templates" / "experiments" / "designs" / f"{name}.md.j2").read_text()
        for macro in ("sentence(e)", "setting(e)", "answer(e)", "rule(e)", "reproduce(e)", "index_cell(e)",
                      "claim_cell(e)", "model_page(e, name)"):
            assert f"{{% macro {macro} %}}" in partial, (name, macro)
        assert set(design.plots) <= set(PLOTS)
    for package in ("compare", "experiments", "figures", "report"):
        for module in (REPO / "pipeline" / package).glob("*.py"):
            assert len(module.read_text().splitlines()) <= 400, module
