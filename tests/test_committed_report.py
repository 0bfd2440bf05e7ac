"""The committed report (site_assets/ and docs/generated/) is consistent with itself and with the templates. A main
run trained again here changes the working tree's report; these checks read HEAD's then (committed_report_root)."""

import json

from PIL import Image

from pipeline.config import Paths
from pipeline.report.pages import PAGES, number, percent, rendered_pages
from tests.conftest import committed_report_root

COMMITTED = Paths(committed_report_root())


def test_every_manifest_entry_exists_and_is_an_image():
    manifest = json.loads(COMMITTED.manifest.read_text())
    assert manifest["figures"]
    for figure in manifest["figures"]:
        with Image.open(COMMITTED.site_assets / figure["path"]) as image:
            image.verify()


def test_committed_runs_meet_their_targets():
    numbers = {n["id"]: n for n in json.loads(COMMITTED.manifest.read_text())["numbers"]}
    assert numbers["cls_test_accuracy"]["met"] and numbers["cls_test_accuracy"]["value"] >= 0.80
    assert numbers["mt_test_bleu"]["met"] and numbers["mt_test_bleu"]["value"] >= 15


def test_headline_numbers_on_committed_pages_equal_committed_metrics():
    cls = json.loads((COMMITTED.site_assets / "cls" / "metrics.json").read_text())
    mt = json.loads((COMMITTED.site_assets / "mt" / "metrics.json").read_text())
    home = (COMMITTED.generated_docs / "home.md").read_text()
    assert f"**{percent(cls['test_accuracy'])}**" in home
    assert f"**{number(mt['test_bleu'])}** ± {number(mt['test_bleu_ci95'])}" in home
    transformer = (COMMITTED.generated_docs / "transformer.md").read_text()
    assert f"`{mt['bleu_signature']}`" in transformer


def test_committed_pages_are_what_the_templates_render_now():
    """A template or metrics change without `make report` and a commit would leave the site stale."""
    pages = rendered_pages(COMMITTED)
    assert set(PAGES.values()) <= set(pages)
    on_disk = {p.relative_to(COMMITTED.generated_docs).as_posix() for p in COMMITTED.generated_docs.rglob("*.md")}
    assert on_disk == set(pages), "docs/generated/ holds other pages than the report renders"
    for page, text in pages.items():
        assert (COMMITTED.generated_docs / page).read_text() == text, f"docs/generated/{page} is stale"


def test_every_table_on_a_committed_page_starts_its_own_block():
    """Markdown reads a table that follows a line of text without a blank line as more of that paragraph."""
    for page in sorted(COMMITTED.generated_docs.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines[1:], 1):
            if line.startswith("| ") and lines[i - 1].strip() and not lines[i - 1].startswith("|"):
                raise AssertionError(f"{page}, line {i + 1}: a table right after text: {lines[i - 1][:80]!r}")


def test_the_reproducibility_pages_config_tables_list_every_field_of_todays_config():
    """The main run's record was written when its figures were drawn; options added since must show too, with the
    value the run trained with, not be missing from the table a reader reruns it by."""
    import dataclasses
    import re

    from pipeline.config import CONFIGS

    page = (COMMITTED.generated_docs / "reproducibility.md").read_text(encoding="utf-8")
    tabs = re.split(r'^=== "', page.split("## Configuration", 1)[1], flags=re.M)[1:]
    for model, tab in zip(("cls", "mt"), tabs):
        shown = re.findall(r"^    \| `(\w+)` \|", tab, flags=re.M)
        assert shown == sorted(f.name for f in dataclasses.fields(CONFIGS[model])), model


def test_committed_benchmarks_are_what_the_run_files_give():
    """BENCHMARKS.md is written from the runs' files; a hand edit, or a run added without `make pages`, shows."""
    from pipeline.report.pages import BENCHMARKS, rendered_benchmarks

    assert (COMMITTED.root / BENCHMARKS).read_text(encoding="utf-8") == rendered_benchmarks(COMMITTED)


def test_no_committed_answer_rests_on_a_run_from_uncommitted_changes():
    """Runs trained from a tree with uncommitted changes are listed as not counted, never compared."""
    folder = COMMITTED.site_assets / "experiments"
    for name in json.loads((folder / "index.json").read_text())["experiments"]:
        result = json.loads((folder / f"{name}.json").read_text())
        assert not [r["folder"] for r in result["runs"] if r["commit"].endswith("-dirty")], name


def test_padding_in_a_batch_is_reported_only_where_an_arm_lets_attention_see_source_padding():
    def read(name):
        return json.loads((COMMITTED.site_assets / "experiments" / f"{name}.json").read_text())

    masks = read("masks")
    assert "no-source-padding" in " ".join(masks["padding_sentences"])
    assert read("recipe-mt")["padding_sentences"] == []  # every arm masks padding: nothing to report


def test_no_page_shows_a_p_value_its_test_cannot_give():
    """A p-value that underflowed reads "p < 1e-300", and a bootstrap's floor 1/(B + 1) reads "p ≤ ..."."""
    import re

    for page in COMMITTED.generated_docs.rglob("*.md"):
        text = page.read_text()
        assert not re.search(r"p = 0(?![.\d])", text), page
        assert not re.search(r"bootstrap[^|]*p = 0\.001\b", text), page


def test_the_numbers_the_readme_cites_are_the_run_files():
    """The README types in a few numbers about runs: each must be what the run's files say."""
    readme = " ".join((COMMITTED.root / "README.md").read_text().split())

    def read(path):
        return json.loads((COMMITTED.root / path).read_text())

    cls = read("runs/cls/main/final.json")
    assert f"{cls['parameters']:,} parameters" in readme
    mt = read("runs/mt/main/final.json")
    kinds = {(6, 167): "Intel Xeon", (25, 17): "AMD EPYC Zen 4"}

    def where(model):
        p = read(f"runs/{model}/main/provenance.json")
        return (f"on the {kinds[p['cpu_family'], p['cpu_model']]} (family {p['cpu_family']}, model {p['cpu_model']}), "
                f"in {p['precision']}")

    assert (f"the ResNet-18 trained in {cls['train_wall_s'] / 60:.1f} min {where('cls')}, and the Transformer in "
            f"{mt['train_wall_s'] / 60:.1f} min {where('mt')}; scoring their test sets took {cls['test_wall_s']:.0f} s "
            f"and {mt['test_wall_s']:.0f} s, so `make train` is about "
            f"{(cls['train_wall_s'] + mt['train_wall_s']) / 60:.0f} min of training") in readme
    long = read("runs/mt/long/final.json")
    assert (f"8 epochs over {long['train_pairs']:,} training pairs took {long['train_wall_s'] / 60:.0f} min, "
            f"and scoring {long['test_sentences']:,} test sentences {long['test_wall_s'] / 60:.1f} min") in readme
    assert f"test BLEU {long['test_bleu']:.2f}" in readme
    probe = read("runs/cls/confirm-recipe-cls-screened-s6/provenance.json")["probe_images_per_s"]
    assert f"{probe['bf16']} images/s in bf16 against {probe['fp32']} in fp32" in readme
    speed = read("runs/cls/bench-speed/step_speed.json")
    compile_s = " and ".join(f"{side['compile_s']:.0f} s" for side in speed["sides"])
    assert f"compiling took {compile_s}" in readme and f"{-100 * speed['saved']:.1f} % slower" in readme


RECIPE_CONFIRMATIONS = ("confirm-recipe-cls", "confirm-screen-cls", "confirm-ramp8-cls")  # the recipe page's


def test_the_recipe_page_states_each_experiments_numbers_and_where_they_ran():
    """The recipe page: each confirmation's verdict and interval as its comparison computed them (or that it is
    held), whether the default changed, and the machines of the confirmation, the ablation and the epochs curve,
    from their runs' provenance."""
    from pipeline.report.pages import metric, verdict_interval

    page = (COMMITTED.generated_docs / "recipe.md").read_text()
    flat = " ".join(page.split())
    folder = COMMITTED.site_assets / "experiments"
    for name in RECIPE_CONFIRMATIONS:
        confirmation = json.loads((folder / f"{name}.json").read_text())
        if confirmation["answer"]["kind"] == "held":
            assert (f"[{name}](experiments/{name}.md) was declared before its runs and gets no verdict until all "
                    f"{confirmation['planned_runs']} have finished ({len(confirmation['runs'])} so far)") in flat
            continue
        comparison = confirmation["comparisons"][0]
        for m in comparison["metrics"]:
            summaries = confirmation["summaries"][m["metric"]]
            row = (f"| {metric(summaries[comparison['against']]['mean'], m['metric'])} "
                   f"| {metric(summaries[comparison['arm']]['mean'], m['metric'])} ")
            assert row in page and f"| {verdict_interval(m, m['metric'])} | **{m['verdict']}** |" in page, name
        section = flat.split(f"[{name}](experiments/{name}.md): ")[1].split("###")[0]
        assert f"as declared: **{comparison['verdict']}**" in section
        kept = 'The verdict is not "supported", so the default stays as it was'
        assert (kept in section) == (comparison["verdict"] != "supported"), name
    for name in ("confirm-recipe-cls", "recipe-ablation-cls", "epochs-cls"):
        machines = json.loads((folder / f"{name}.json").read_text())["mix"]["machines"]
        assert "trained on " + "; ".join(f"{m['machine']} ({m['runs']} run{'s' if m['runs'] > 1 else ''})"
                                         for m in machines) in " ".join(page.split()), name


def test_the_recipe_pages_epochs_curves_give_each_lengths_runs_and_mean_scores():
    from pipeline.report.pages import metric

    page = (COMMITTED.generated_docs / "recipe.md").read_text()
    for name in ("epochs-cls", "epochs-ramp7-cls"):
        result = json.loads((COMMITTED.site_assets / "experiments" / f"{name}.json").read_text())
        lengths: dict = {}
        for run in result["runs"]:
            lengths.setdefault(run["config"]["epochs"], []).append(run)
        for length, runs in lengths.items():
            mean = sum(r["values"]["val_accuracy"] for r in runs) / len(runs)
            seeds = ", ".join(str(r["seed"]) for r in runs)
            row = (f"| {length} | `{runs[0]['config']['resolutions']}` | {len(runs)} ({seeds}) | "
                   f"{metric(mean, 'val_accuracy')} |")
            assert row in page, (name, length)


def test_every_sweep_of_two_values_or_more_draws_its_scores():
    manifest = json.loads(COMMITTED.manifest.read_text())
    drawn = {f["id"] for f in manifest["figures"]}
    for name in json.loads((COMMITTED.site_assets / "experiments" / "index.json").read_text())["experiments"]:
        result = json.loads((COMMITTED.site_assets / "experiments" / f"{name}.json").read_text())
        if result["design"] == "sweep":
            values = {r["config"][result["sweep"]] for r in result["runs"]}
            assert (f"exp_{name}_scores" in drawn) == (len(values) > 1), name


def test_the_recipe_prose_reads_the_config_and_the_code():
    """The model pages take the ramp of image sides and Adam's constants from the run's config and the code, not
    from a template's own copy."""
    from pipeline.config import ADAM_BETAS, ADAM_EPS, config_from_dict, image_sides

    config = json.loads((COMMITTED.run("cls") / "config.json").read_text())
    sides = ", ".join(map(str, image_sides(config_from_dict("cls", config))))
    resnet = " ".join((COMMITTED.generated_docs / "resnet.md").read_text().split())
    assert f"image sides of {sides} pixels in the {config['epochs']} epochs" in resnet
    flips = {"alternate": "each image mirrored in every other epoch", "random": "a coin per image and epoch"}
    assert f"horizontal flips ({flips[config['flip']]}" in resnet
    transformer = " ".join((COMMITTED.generated_docs / "transformer.md").read_text().split())
    assert f"Adam (β = {ADAM_BETAS[0]}, {ADAM_BETAS[1]}, ε = {ADAM_EPS})" in transformer
