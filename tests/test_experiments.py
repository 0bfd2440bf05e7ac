"""Experiments as data: definitions checked, comparisons computed from metric files, answers from numbers."""

import copy
import math

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import REPO, PipelineError
from pipeline.experiments import answer, arm_summary, differing_fields, load_experiments, parse_experiments

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


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tiny"].update(model="gan"), r"experiment 'tiny', field 'model': must be one of cls, mt"),
    (lambda d: d["tiny"].update(metrics=["accuracy"]), r"field 'metrics': must be a list drawn from"),
    (lambda d: d["tiny"]["runs"]["b"].update(lr="fast"), r"run 'b': --lr expects a float"),
    (lambda d: d["tiny"]["runs"]["b"].update(shortcut=False), r"run 'b': 'shortcut' is not a config field"),
    (lambda d: d["tiny"].update(control="c"), r"field 'control': must name one of the arms"),
    (lambda d: d["tiny"].update(design="sweep", sweep="lr", choose_on="test_accuracy"),
     r"field 'choose_on': must be a validation score"),
    (lambda d: d["tiny"].update(colour="red"), r"field 'colour': unknown field"),
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
    data["sweep"] = {**data["tiny"], "design": "sweep", "sweep": "lr", "choose_on": "val_accuracy", "base": {"lr": 0.5},
                     "runs": {"low": {"lr": 0.01}, "default": {"same_as": "tiny/a"}}}
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


def _record(name, arm, value, seed=0, diverged=False):
    return {"name": name, "arm": arm, "seed": seed, "values": {"val_accuracy": value}, "diverged": diverged,
            "config": {"lr": float(name.removeprefix("lr")) if name.startswith("lr") else 0.1},
            "final": {"test_accuracy": value, "test_images": 10_000}}


def test_the_ablation_answer_flips_when_the_numbers_swap():
    experiment = parse_experiments(copy.deepcopy(GOOD), REPO / "x.yaml")[0]
    runs = [_record("a1", "a", 0.80, 0), _record("a2", "a", 0.81, 1), _record("b1", "b", 0.60, 0),
            _record("b2", "b", 0.62, 1)]

    def word(records):
        arms = {}
        for r in records:
            arms.setdefault(r["arm"], []).append(r)
        summaries = {"val_accuracy": {arm: arm_summary("val_accuracy", rs, "cls") for arm, rs in arms.items()}}
        return answer(experiment, summaries, records)["effects"][0]["word"]

    assert word(runs) == "lower"
    swapped = [_record(r["name"], "b" if r["arm"] == "a" else "a", r["values"]["val_accuracy"], r["seed"])
               for r in runs]
    assert word(swapped) == "higher"
    close = [_record("a1", "a", 0.80, 0), _record("a2", "a", 0.84, 1), _record("b1", "b", 0.81, 0),
             _record("b2", "b", 0.83, 1)]
    assert word(close) == "no clear difference"


def test_a_sweep_chooses_on_validation_and_never_a_diverged_run():
    data = {"sweep": {"model": "cls", "question": "Q?", "metrics": ["val_accuracy"], "design": "sweep",
                      "sweep": "lr", "choose_on": "val_accuracy", "budget": "b",
                      "runs": {"lr0.1": {"lr": 0.1}, "lr0.5": {"lr": 0.5}, "lr2.0": {"lr": 2.0}}}}
    experiment = parse_experiments(data, REPO / "x.yaml")[0]
    records = [_record("lr0.1", "lr0.1", 0.7), _record("lr0.5", "lr0.5", 0.8), _record("lr2.0", "lr2.0", 0.9, 0, True)]
    result = answer(experiment, {}, records)
    assert result["chosen"] == "lr0.5" and result["chosen_value"] == 0.5 and result["diverged"] == ["lr2.0"]


def test_one_run_per_arm_takes_its_spread_from_the_test_set():
    summary = arm_summary("test_accuracy", [{"values": {"test_accuracy": 0.8},
                                             "final": {"test_accuracy": 0.8, "test_images": 10_000}}], "cls")
    assert summary["spread_from"] == "test set" and summary["halfwidth"] == pytest.approx(0.00784, abs=1e-4)
    validation = arm_summary("val_accuracy", [{"values": {"val_accuracy": 0.8}, "final": {},
                                              "config": {"val_size": 5000}}], "cls")
    assert validation["spread_from"] == "validation set" and validation["halfwidth"] == pytest.approx(0.0111, abs=1e-4)
    assert math.isnan(arm_summary("val_loss", [{"values": {"val_loss": 0.5}, "final": {}}], "cls")["halfwidth"])


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
