"""The whole pipeline on tiny data, from nothing to a built site, in a temporary root."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from markupsafe import escape
from PIL import Image
from scipy import stats

from pipeline.config import REPO, Paths, PipelineError
from pipeline.scoring.bleu import corpus_bleu
from pipeline.io import load_arrays
from pipeline.report.pages import cell, number, percent
from tests.conftest import make, tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("built")]  # one worker builds `built` for all


def test_every_manifest_figure_is_a_valid_image(built):
    manifest = json.loads(built.manifest.read_text())
    assert len(manifest["figures"]) >= 10
    for figure in manifest["figures"]:
        path = built.site_assets / figure["path"]
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            image.verify()
        assert figure["title"] and figure["caption"] and figure["alt"] and figure["run"]["git_commit"]
    kinds = {f["kind"] for f in manifest["figures"] if "kind" in f}
    assert kinds == {"encoder_self", "decoder_self", "decoder_source"}
    assert any(f["path"].endswith("layer1_head1.png") for f in manifest["figures"])


def test_classification_metrics_agree_with_predictions(built):
    metrics = json.loads((built.site_assets / "cls" / "metrics.json").read_text())
    arrays = load_arrays(built.run("cls") / "eval" / "predictions.npz")
    labels, predictions = arrays["labels"], arrays["predictions"]
    assert np.array_equal(predictions, arrays["logits"].argmax(1))
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == len(labels) == metrics["test_images"]
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    assert np.allclose(rows.sum(1)[confusion.sum(1) > 0], 1)
    counts = np.bincount(labels, minlength=10)
    recall_weighted = sum(rows[c, c] * counts[c] for c in range(10)) / counts.sum()
    assert metrics["test_accuracy"] == pytest.approx((predictions == labels).mean())
    assert metrics["test_accuracy"] == pytest.approx(recall_weighted)
    assert metrics["parameters"] == 11_173_962


def test_translation_bleu_recomputed_from_saved_decodes(built):
    metrics = json.loads((built.site_assets / "mt" / "metrics.json").read_text())
    decodes = json.loads((built.run("mt") / "eval" / "decodes.json").read_text())
    assert len(decodes) == metrics["test_sentences"]
    bleu = corpus_bleu([d["beam"] for d in decodes], [d["references"] for d in decodes])
    assert bleu == pytest.approx(metrics["test_bleu"])
    assert "nrefs" in metrics["bleu_signature"] and "tok:13a" in metrics["bleu_signature"]


def test_mask_figure_data_equals_the_masks_the_model_uses(built):
    import torch

    from pipeline.models import transformer

    masks = load_arrays(built.run("mt") / "eval" / "masks.npz")
    src, tgt = torch.from_numpy(masks["src"]), torch.from_numpy(masks["tgt"])
    seen = []
    real_attention = transformer.attention

    def spy(q, k, v, mask=None, dropout=None):
        seen.append(mask)
        return real_attention(q, k, v, mask, dropout)

    model = transformer.make_transformer(50, 50, d_model=16, heads=2, layers=1, d_ff=32, dropout=0.0)
    transformer.attention = spy
    try:
        model(src.clamp(max=49), tgt.clamp(max=49))
    finally:
        transformer.attention = real_attention
    encoder_mask, decoder_self_mask, cross_mask = seen
    assert np.array_equal(encoder_mask[:, 0, 0].numpy(), masks["source_padding"])
    assert np.array_equal(decoder_self_mask[:, 0].numpy(), masks["target"])
    assert np.array_equal(masks["target"], masks["causal"][None] & masks["target_padding"][:, None, :])
    assert np.array_equal(cross_mask[:, 0, 0].numpy(), masks["source_padding"])


def test_rerunning_the_stages_gives_the_same_files(built):
    before = tree_digest(built.site_assets)
    for stage in (["evaluate", "cls"], ["evaluate", "mt"], ["figures", "cls"], ["figures", "mt"], ["compare"],
                  ["figures", "experiments"], ["manifest"]):
        subprocess.run([sys.executable, "-m", "pipeline", *stage], check=True, capture_output=True,
                       env={**os.environ, "PIPELINE_ROOT": str(built.root), "CIFAR10_ARCHIVE": "",
                            "PIPELINE_EXPERIMENTS": str(built.root / "experiments.yaml")})
    after = tree_digest(built.site_assets)
    changed = sorted(k for k in before if before[k] != after.get(k) and not k.endswith("timings.json"))
    assert not changed and before.keys() == after.keys()


def test_pages_have_no_template_syntax_left(built):
    for page in built.generated_docs.rglob("*.md"):
        text = page.read_text()
        assert "{{" not in text and "{%" not in text, page


def test_every_table_row_is_a_line_of_its_own(built):
    """A template tag that swallows a row's line break joins the rows into one line no renderer reads as a
    table; checked on the pages built here and on the committed report."""
    for page in [*built.generated_docs.rglob("*.md"), *(REPO / "docs" / "generated").rglob("*.md")]:
        for line in page.read_text().splitlines():
            if re.search(r"\|\s*:?-{3,}:?\s*\|", line):  # a header's separator row: nothing else on its line
                assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", line.strip()), f"{page}: {line[:80]}"


def test_numbers_on_pages_equal_the_metrics(built):
    cls = json.loads((built.site_assets / "cls" / "metrics.json").read_text())
    mt = json.loads((built.site_assets / "mt" / "metrics.json").read_text())
    home = (built.generated_docs / "home.md").read_text()
    resnet = (built.generated_docs / "resnet.md").read_text()
    transformer = (built.generated_docs / "transformer.md").read_text()
    assert f"**{percent(cls['test_accuracy'])}**" in home
    assert f"**{number(mt['test_bleu'])}** ± {number(mt['test_bleu_ci95'])}" in home
    assert f"**{percent(cls['test_accuracy'])}**" in resnet
    for row in cls["per_class"]:
        cells = f"| {escape(row['class'])} | {percent(row['precision'], 1)} | {percent(row['recall'], 1)} | " \
                f"{percent(row['f1'], 1)} | {row['support']} |"
        assert cells in resnet
    for name in ("bleu", "chrf", "ter"):
        assert f"`{mt[name + '_signature']}`" in transformer
    assert f"| TER | {number(mt['test_ter'])} |" in transformer
    # The built HTML shows the same headline numbers.
    index = (built.site / "index.html").read_text()
    assert percent(cls["test_accuracy"]) in index and number(mt["test_bleu"]) in index


def test_every_image_in_the_built_site_exists(built):
    pages = list(built.site.rglob("*.html"))
    assert len(pages) >= 7
    referenced = 0
    for page in pages:
        for src in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            if src.startswith("data:"):
                continue
            assert not src.startswith(("http:", "https:", "//")), (page, src)
            assert (page.parent / src).resolve().is_file(), (page, src)
            referenced += 1
    assert referenced >= 10


def test_notebooks_are_executed_against_the_run(built):
    for name in ("resnet", "transformer"):
        notebook = json.loads((built.generated_docs / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert code and all(c["execution_count"] for c in code)
        assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])


def test_editing_a_template_rerenders_without_reevaluating(built):
    metrics = built.site_assets / "cls" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    dry = make("-n", built.root, "report")  # nothing is out of date after the build
    assert "pipeline evaluate" not in dry.stdout and "pipeline train" not in dry.stdout
    template = REPO / "pipeline" / "templates" / "insights.md.j2"
    os.utime(template)  # as if edited
    dry = make("-n", built.root, "report")
    assert "pipeline pages" in dry.stdout and "mkdocs build" in dry.stdout
    assert "pipeline evaluate" not in dry.stdout and "pipeline figures" not in dry.stdout
    assert metrics.stat().st_mtime_ns == before


def test_missing_or_malformed_manifest_names_the_file(built, tmp_path):
    from pipeline.report.pages import render_pages

    paths = Paths(tmp_path)
    with pytest.raises(PipelineError, match=re.escape(str(paths.manifest))):
        render_pages(paths)
    paths.manifest.parent.mkdir(parents=True)
    paths.manifest.write_text("{not json")
    with pytest.raises(PipelineError, match=re.escape(str(paths.manifest)) + ".*not valid JSON"):
        render_pages(paths)
    paths.manifest.write_text(json.dumps({"figures": {}}))
    with pytest.raises(PipelineError, match="'figures' list"):
        render_pages(paths)


def test_missing_run_says_how_to_make_it(tmp_path):
    from pipeline.evaluate.cls import evaluate_cls

    expected = r"runs/cls/main/checkpoint.pt is missing: train the model first \(make train-cls\)"
    with pytest.raises(PipelineError, match=expected):
        evaluate_cls(Paths(tmp_path))


def test_workflow_builds_with_the_command_make_site_runs():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "site.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    build = [r for r in runs if "mkdocs build" in r]
    dry = subprocess.run(["make", "-n", "-B", "site", "ROOT=/nonexistent"], cwd=REPO, capture_output=True, text=True)
    assert len(build) == 1 and build[0].strip() in dry.stdout
    assert any("deploy-pages" in str(step.get("uses", ""))
               for job in workflow["jobs"].values() for step in job["steps"])


def test_test_scores_are_computed_once_and_shown_everywhere_alike(built):
    for model, keys in (("cls", ("test_accuracy", "test_images")),
                        ("mt", ("test_bleu", "test_bleu_ci95", "test_chrf", "test_ter", "bleu_signature"))):
        final = json.loads((built.run(model) / "final.json").read_text())
        metrics = json.loads((built.site_assets / model / "metrics.json").read_text())
        run = json.loads((built.site_assets / model / "run.json").read_text())
        for key in keys:
            assert metrics[key] == final[key] == run["final"][key], (model, key)
    from pipeline.config import TARGETS

    assert json.loads((built.site_assets / "cls" / "metrics.json").read_text())["target_accuracy"] \
        == TARGETS.cls_test_accuracy


def test_another_language_pair_in_another_script_goes_through_to_the_page(built):
    """The made-up Greek->Russian corpus: raw text in, raw text scored and shown, languages named from the config."""
    corpus_lines = (built.root / "tiny.tsv").read_text(encoding="utf-8").splitlines()
    by_source = {}
    for line in corpus_lines:
        source, target = line.split("\t")
        by_source.setdefault(source.strip(), []).append(target.strip())
    decodes = json.loads((built.run("mt") / "test_outputs.json").read_text())
    assert decodes
    for d in decodes:
        assert d["references"] == by_source[d["source"]]  # byte for byte, as written in the corpus
        assert "<unk>" not in d["beam"] and "<unk>" not in d["greedy"]
    page = (built.generated_docs / "transformer.md").read_text(encoding="utf-8")
    assert page.startswith("# Transformer on Greek → Russian")
    assert "| case | source (Greek) | reference(s) (Russian) |" in page
    assert "French" not in page and "English" not in page
    shown = json.loads((built.site_assets / "mt" / "decode_table.json").read_text())
    assert any(str(cell(ref)) in page for d in shown for ref in d["references"])


def test_scoring_sees_text_as_written():
    """Case counts: an output lower-cased on purpose scores lower than the same output cased."""
    from pipeline.scoring.bleu import test_scores

    references = [["Я готовый."], ["Он очень высокий!"], ["Говорю тебе: мы спокойный?"]]
    cased = [r[0] for r in references]
    lowered = [r[0].lower() for r in references]
    exact, lower = test_scores(cased, cased, references), test_scores(lowered, lowered, references)
    assert exact["test_bleu"] == pytest.approx(100) and lower["test_bleu"] < exact["test_bleu"]
    assert lower["test_bleu_lowercase"] == pytest.approx(100)
    assert "case:lc" in lower["bleu_lowercase_signature"] and "case:mixed" in lower["bleu_signature"]


def test_a_tiny_experiment_goes_end_to_end_to_its_page(built):
    manifest = json.loads(built.manifest.read_text())
    listed = {e["name"]: e for e in manifest["experiments"]}
    assert set(listed) == {"tiny-residual", "seeds-cls", "gradcam"}  # never-run has no runs: not shown
    runs = listed["tiny-residual"]["runs"]
    assert [r["differing_config"] for r in runs] == [{"shortcuts": True}, {"shortcuts": False}]
    # One run per arm and a seeds experiment of one run: no training noise measured, so no verdict.
    result = json.loads((built.site_assets / "experiments" / "tiny-residual.json").read_text())
    assert [(c["arm"], c["against"], c["verdict"]) for c in result["comparisons"]] == \
        [("plain", "residual", "not enough runs")]
    page = (built.generated_docs / "experiments" / "tiny-residual.md").read_text()
    assert "| run | arm | seed | `shortcuts` | parameters |" in page  # only the field that differs
    assert "`tiny-residual-plain`" in page and "make experiments NAMES=\"tiny-residual\"" in page
    assert "| plain against residual | val_accuracy |" in page and "**not enough runs**" in page
    index = (built.generated_docs / "experiments" / "index.md").read_text()
    assert "[tiny-residual](tiny-residual.md)" in index and "never-run" in index
    assert (built.site / "generated" / "experiments" / "tiny-residual.html").exists()
    # The Grad-CAM page's words follow the deletion test's numbers by the rule (t over the images).
    deletion = json.loads((built.runs / "cls" / "analyses" / "deletion.json").read_text())
    gap = deletion["area_between"]["random_minus_salient"]
    low, high = stats.t.interval(0.95, deletion["images"] - 1, loc=gap["mean"],
                                 scale=gap["sd"] / np.sqrt(deletion["images"]))
    expected = "faster than deleting random regions" if low > 0 else (
        "more slowly than deleting random regions" if high < 0 else "no faster or slower than deleting random")
    gradcam = " ".join((built.generated_docs / "experiments" / "gradcam.md").read_text().split())
    assert expected in gradcam and f"95 % interval {number(low, 3)} to {number(high, 3)}" in gradcam
    assert not (built.runs / "cls" / "never-run-other").exists()
    # The recipe page, with none of its experiments declared here, says what would run them.
    recipe = (built.generated_docs / "recipe.md").read_text()
    assert "No run of `confirm-recipe-cls` has finished yet" in recipe and "**The rule.**" in recipe


def test_a_main_run_trained_here_says_whether_it_reproduces_the_seeds_trained_elsewhere(built, tmp_path):
    """The smoke main run (seed 0, trained here) against three seeds of seeds-cls that another machine trained:
    the ResNet page says whether its test accuracy falls inside their 95 % prediction interval of one new run."""
    import dataclasses
    import shutil

    from pipeline.compare.stats import prediction_interval
    from pipeline.config import make_config
    from pipeline.io import write_json

    root = tmp_path / "root"
    shutil.copytree(built.root, root, symlinks=True, ignore=shutil.ignore_patterns("site"))
    score = json.loads((root / "runs" / "cls" / "main" / "final.json").read_text())["test_accuracy"]
    spec = yaml.safe_load((root / "experiments.yaml").read_text())
    spec["seeds-cls"]["runs"].update({f"s{seed}": {"seed": seed} for seed in (1, 2, 3)})
    (root / "experiments.yaml").write_text(yaml.safe_dump(spec))

    def page_after(seed_scores):
        for seed, accuracy in zip((1, 2, 3), seed_scores):
            folder = root / "runs" / "cls" / f"seeds-cls-s{seed}"
            config = make_config("cls", "full", {"seed": seed})
            write_json(folder / "config.json", {"model": "cls", **dataclasses.asdict(config)})
            write_json(folder / "provenance.json", {"git_commit": "abc", "precision": "fp32", "processes": 1,
                                                    "device": "cpu", "cpu": "Made-up CPU", "cpu_family": 0,
                                                    "cpu_model": 0, "threads": 2})
            (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 2.0}) + "\n")
            write_json(folder / "final.json", {"test_accuracy": accuracy, "train_wall_s": 1.0})
        for stage in (["compare"], ["figures", "experiments"], ["manifest"], ["pages"]):
            subprocess.run([sys.executable, "-m", "pipeline", *stage], check=True, capture_output=True,
                           env={**os.environ, "PIPELINE_ROOT": str(root), "CIFAR10_ARCHIVE": "",
                                "PIPELINE_EXPERIMENTS": str(root / "experiments.yaml")})
        return " ".join((root / "docs" / "generated" / "resnet.md").read_text().split())

    near = [score - 0.01, score, score + 0.01]
    low, high = prediction_interval(near)
    page = page_after(near)
    assert f"Its test_accuracy, {percent(score)}, falls **inside** the 95 % prediction interval" in page
    assert f"{percent(low)} to {percent(high)}" in page and "Made-up CPU (family 0, model 0), cpu, fp32" in page
    page = page_after([score + 0.30, score + 0.31, score + 0.32])
    assert "falls **outside** the 95 % prediction interval" in page and "it does not reproduce" in page
