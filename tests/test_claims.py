"""Sentences from numbers: feed a page numbers that flip a claim, and the sentence must flip."""

import copy
import re

import pytest

from pipeline.compare.insights import MIN_EVIDENCE, insight_tests, means_differ, proportions_differ
from pipeline.config import REPO, Paths
from pipeline.io import read_json, read_jsonl
from pipeline.report.pages import context, environment
from tests.conftest import committed_report_root


def test_the_words_follow_the_tests():
    assert proportions_differ(0.9, 1000, 0.8, 1000)["word"] == "higher"
    assert proportions_differ(0.8, 1000, 0.9, 1000)["word"] == "lower"
    assert proportions_differ(0.80, 100, 0.82, 100)["word"] == "no clear difference"
    assert means_differ(0.6, 0.1, 100, 0.9, 0.1, 900)["word"] == "lower"
    assert means_differ(0.80, 0.2, 30, 0.81, 0.2, 30)["word"] == "no clear difference"


@pytest.fixture(scope="module")
def ctx():
    return context(Paths(committed_report_root()))


def render(ctx, template="insights.md.j2"):
    """The page as the pipeline makes it: the comparison stage's tests recomputed from the (edited) numbers."""
    main = committed_report_root() / "runs" / "cls" / "main"
    ctx = {**ctx, "insights": insight_tests(ctx["cls"]["metrics"], read_json(main / "config.json", "config"),
                                            ctx["cls"]["run"]["epochs"], ctx["mt"]["metrics"])}
    return " ".join(environment().get_template(template).render(ctx).split())


def test_the_committed_insights_are_the_comparison_stages(ctx):
    main = committed_report_root() / "runs" / "cls" / "main"
    assert ctx["insights"] == insight_tests(ctx["cls"]["metrics"], read_json(main / "config.json", "config"),
                                            read_jsonl(main / "metrics.jsonl"), ctx["mt"]["metrics"])


def test_validation_against_test_sentence_follows_the_numbers(ctx):
    ctx = copy.deepcopy(ctx)
    test = ctx["cls"]["metrics"]["test_accuracy"]
    last = ctx["cls"]["run"]["epochs"][-1]
    last["val_accuracy"] = test
    text = render(ctx)
    assert "no clear difference: at these sample sizes the test cannot tell the two scores apart" in text
    assert "which does not show that they agree" in text and "previewed" not in text  # no gap found is not agreement
    last["val_accuracy"] = test - 0.1
    assert "the test score is higher than the validation score" in render(ctx)
    last["val_accuracy"] = test + 0.1
    assert "the test score is lower than the validation score" in render(ctx)


def test_confidence_sentence_follows_the_numbers(ctx):
    ctx = copy.deepcopy(ctx)
    m = ctx["cls"]["metrics"]
    m.update(correct_count=900, wrong_count=100, confidence_sd_correct=0.1, confidence_sd_wrong=0.1)
    m.update(mean_confidence_correct=0.9, mean_confidence_wrong=0.6)
    assert "the model is less sure when it errs" in render(ctx)
    m.update(mean_confidence_correct=0.6, mean_confidence_wrong=0.9)
    assert "the model is more sure when it errs" in render(ctx)
    m.update(mean_confidence_correct=0.8, mean_confidence_wrong=0.805)
    assert "there is no clear difference in how sure it is" in render(ctx)
    m.update(wrong_count=MIN_EVIDENCE - 1, mean_confidence_wrong=0.6)
    text = render(ctx)
    assert "when it errs" not in text and "how sure it is" not in text  # too few mistakes to claim anything


def test_beam_against_greedy_sentence_follows_the_numbers(ctx):
    ctx = copy.deepcopy(ctx)
    ctx["mt"]["metrics"]["beam_vs_greedy"] = pair = {"method": "sacrebleu's paired bootstrap (1000 resamples)",
                                                     "resamples": 1000}
    pair.update(difference=3.0, p_value=0.000999)
    assert "so beam search is higher" in render(ctx) and "p ≤ 0.001" in render(ctx)  # the bootstrap's floor
    pair.update(difference=-3.0, p_value=0.001)
    assert "so beam search is lower" in render(ctx)
    pair.update(difference=3.0, p_value=0.2)
    assert "so there is no clear difference between them" in render(ctx)


def test_length_sentence_follows_its_trend_test_and_every_bucket_is_shown(ctx):
    ctx = copy.deepcopy(ctx)
    t = ctx["mt"]["metrics"]
    t["bleu_by_length"] = [
        {"bucket": "1–3", "sentences": 100, "bleu": 60.0, "bleu_ci95": 3.0},
        {"bucket": "4–5", "sentences": 100, "bleu": 40.0, "bleu_ci95": 3.0},
        {"bucket": "10+", "sentences": 3, "bleu": 5.0, "bleu_ci95": 9.0},
    ]
    t["length_trend"] = {"rho": -0.3, "p_value": 0.001, "sentences": 203, "score": "sentence chrF"}
    text = render(ctx)
    assert "quality **falls** with the source's length" in text and "ρ = -0.30" in text
    assert "| 10+ | 3 | 5.0 | ± 9.0 |" in text and "| 1–3 | 100 | 60.0 | ± 3.0 |" in text  # every bucket, small too
    t["length_trend"].update(rho=-0.05, p_value=0.4)
    assert "By source length: **no clear trend**" in render(ctx)


def test_device_and_config_text_comes_from_the_run(ctx):
    ctx = copy.deepcopy(ctx)
    ctx["cls"]["run"]["provenance"].update(precision="fp32", channels_last=False, threads=7)
    ctx["cls"]["metrics"].update(cam_layer="layer3", cam_layer_output=[256, 8, 8], precision="fp32", threads=7)
    resnet = render(ctx, "resnet.md.j2")
    assert "NCHW memory format and fp32 arithmetic" in resnet and "7 threads, fp32" in resnet
    assert "stage (`layer3`, 256 × 8 × 8) by the gradient" in resnet
    insights = render(ctx)
    assert "**7 threads on" in insights and "fp32 arithmetic" in insights and "channels_last" not in insights
    ctx["cls"]["run"]["provenance"].update(precision="bf16", channels_last=True)
    assert "bf16 autocast with `channels_last`" in render(ctx)


def test_templates_hold_no_typed_in_device_or_shape():
    for template in (REPO / "pipeline" / "templates").glob("*.j2"):
        text = template.read_text()
        assert not re.search(r"512 × 4 × 4|bf16 autocast\)|\(a test checks it\)", text), template.name


def test_the_recipe_page_calls_the_main_runs_recipe_the_default_only_where_it_is(ctx, tmp_path):
    from pipeline.io import write_json
    from pipeline.report.pages import run_record

    main = committed_report_root() / "runs" / "cls" / "main"
    saved = {k: v for k, v in read_json(main / "config.json", "config").items() if k != "bn_momentum"}
    write_json(tmp_path / "site_assets" / "cls" / "run.json", {"config": {**saved, "epochs": 3}})
    record = run_record(Paths(tmp_path), "cls")
    assert record["config"]["bn_momentum"] == 0.1 and record["differs_from_default"] == ["epochs"]
    ctx = copy.deepcopy(ctx)
    assert ctx["cls"]["run"]["differs_from_default"] == []  # the committed main run trained today's defaults
    assert "Today's default, the main run's recipe, trains" in render(ctx, "recipe.md.j2")
    ctx["experiments"]["seeds-cls"]["answer"].update(n=1, mean=0.9, sd=None)  # one seed: no spread to state
    assert "over the 1 seed of [seeds-cls](experiments/seeds-cls.md) its test accuracy is 90.00%." in render(
        ctx, "recipe.md.j2")
    ctx["cls"]["run"].update(differs_from_default=["epochs", "resolutions"])
    text = render(ctx, "recipe.md.j2")
    assert "The main run's recipe differs from today's default in `epochs`, `resolutions`. It trains" in text
    assert "Today's default" not in text


def test_the_experiments_index_groups_by_model_and_says_when_an_uncounted_run_would_count(ctx):
    text = render(ctx, "experiments/index.md.j2")
    resnet, transformer = text.split("## ResNet-18 on CIFAR-10 ")[1].split("## Transformer translation ")
    for name, e in ctx["experiments"].items():
        assert f"| [{name}]({name}.md) |" in (resnet if e["model"] == "cls" else transformer), name
    ctx = {**ctx, "uncounted_runs": {"x": [{"folder": "x-a", "reason": "uncommitted"},
                                           {"folder": "x-b", "reason": "machine"}]}}
    text = render(ctx, "experiments/index.md.j2")
    assert "counts once it is trained again from a commit; a run trained on another machine" in text
    assert "x (`x-a`, uncommitted changes; `x-b`, another machine)." in text
