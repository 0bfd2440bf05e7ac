"""Sentences from numbers: feed a page numbers that flip a claim, and the sentence must flip."""

import copy
import re

import pytest

from pipeline.config import REPO, Paths
from pipeline.report.claims import MIN_EVIDENCE, compare, proportion_halfwidth
from pipeline.report.pages import context, environment


def test_compare_words():
    assert compare(0.9, 0.8, 0.05) == "higher"
    assert compare(0.8, 0.9, 0.05) == "lower"
    assert compare(0.8, 0.82, 0.05) == "no clear difference"
    assert proportion_halfwidth(0.5, 10_000) == pytest.approx(0.0098, abs=1e-4)


@pytest.fixture(scope="module")
def ctx():
    return context(Paths(REPO))


def render(ctx, template="insights.md.j2"):
    return " ".join(environment().get_template(template).render(ctx).split())


def test_validation_against_test_sentence_follows_the_numbers(ctx):
    ctx = copy.deepcopy(ctx)
    test = ctx["cls"]["metrics"]["test_accuracy"]
    last = ctx["cls"]["run"]["epochs"][-1]
    last["val_accuracy"] = test
    assert "so the validation curve previewed the test score" in render(ctx)
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
    pair = ctx["mt"]["metrics"]["beam_vs_greedy"]
    pair.update(difference=3.0, ci95=1.0)
    assert "so beam search is higher" in render(ctx)
    pair.update(difference=-3.0, ci95=1.0)
    assert "so beam search is lower" in render(ctx)
    pair.update(difference=0.5, ci95=1.0)
    assert "so there is no clear difference between them" in render(ctx)


def test_length_sentence_follows_the_numbers_and_skips_small_buckets(ctx):
    ctx = copy.deepcopy(ctx)
    t = ctx["mt"]["metrics"]
    t["bleu_by_length"] = [
        {"bucket": "1–3", "sentences": 100, "bleu": 60.0, "bleu_ci95": 3.0},
        {"bucket": "4–5", "sentences": 100, "bleu": 40.0, "bleu_ci95": 3.0},
        {"bucket": "10+", "sentences": MIN_EVIDENCE - 1, "bleu": 5.0, "bleu_ci95": 9.0},
    ]
    text = render(ctx)
    assert "length matters, the 1–3 bucket scores higher" in text and "10+" not in text
    t["bleu_by_length"][1]["bleu"] = 58.0
    assert "no clear difference between the best and the worst bucket" in render(ctx)


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
