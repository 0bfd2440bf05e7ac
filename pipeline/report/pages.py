"""The pages stage: site_assets (manifest, metrics, run records) -> Jinja templates -> docs/generated/.

Never imports torch: it reads only what the figures stage wrote."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError
from markupsafe import Markup, escape

from pipeline.config import ADAM_BETAS, ADAM_EPS, CONFIGS, REPO, Paths, PipelineError, changed_fields, \
    config_from_dict, image_sides, saved_config, uncommitted
from pipeline.compare.experiments import INSIGHTS, experiment_results
from pipeline.compare.stats import MIN_LENDER_SEEDS, P_FLOOR, RULE
from pipeline.io import TIMINGS, read_json, write_text

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"  # package data: works installed too
PAGES = {  # template -> page under docs/generated/
    "home.md.j2": "home.md",
    "resnet.md.j2": "resnet.md",
    "transformer.md.j2": "transformer.md",
    "insights.md.j2": "insights.md",
    "reproducibility.md.j2": "reproducibility.md",
    "recipe.md.j2": "recipe.md",
    "experiments/index.md.j2": "experiments/index.md",
}
EXPERIMENT_PAGE = "experiments/experiment.md.j2"  # rendered once per experiment with runs
ASSETS_LINK = "assets"  # docs/assets -> ../site_assets
HOOKS = Path(__file__).with_name("mkdocs_hooks.py")


def percent(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}%"


def number(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def metric(value: float, name: str) -> str:
    """A score as the pages write it: accuracies in percent, losses to three decimals, the rest to two."""
    if name.endswith("accuracy"):
        return percent(value)
    return number(value, 3 if name.endswith("loss") else 2)


def cell(text: str) -> Markup:
    """Text as written, safe inside a Markdown table cell: HTML and Markdown characters escaped."""
    text = str(escape(text))
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return Markup(text)


def _points(value: float, name: str) -> float:
    return 100 * value if name.endswith("accuracy") else value


def delta(value: float, name: str) -> str:
    """A difference of two scores: signed, in percentage points for accuracies."""
    return f"{_points(value, name):+.2f}" + (" points" if name.endswith("accuracy") else "")


def sd(value, name: str) -> str:
    """A standard deviation, or "—" for one run, which has none."""
    return "—" if value is None else f"sd {metric(value, name)}"


def p_value(test: dict) -> str:
    """A p-value as its test can give it: "p < 1e-300" where it underflowed to 0, "p ≤ 1/(B + 1)" at the floor of
    a bootstrap of B resamples, else "p = " to two significant digits."""
    p = test["p_value"]
    if test.get("resamples") and p <= 1 / (test["resamples"] + 1) * (1 + 1e-9):
        return f"p ≤ {1 / (test['resamples'] + 1):.2g}"
    return f"p < {P_FLOOR:g}" if p < P_FLOOR else f"p = {p:.2g}"


def _span(low: float, high: float, name: str) -> str:
    return f"{_points(low, name):+.2f} to {_points(high, name):+.2f}"


def verdict_interval(m: dict, name: str) -> str:
    """The one interval a verdict read, with the noises it counts; or why there is none."""
    training = m["training"]
    if training is None:
        return "not enough runs to measure the training noise"
    if m["interval"] is None:
        return (f"training noise alone {_span(training['low'], training['high'], name)} ({training['method']}); "
                "the test-sample noise cannot be counted: an arm has no run that kept per-image test predictions")
    text = f"{_span(m['interval']['low'], m['interval']['high'], name)} ({training['method']}"
    sample = m.get("sample")
    if sample:
        a, b = sample["seeds_a"], sample["seeds_b"]
        seeds = (f"seed {a[0]}" if a == b and len(a) == 1
                 else f"seeds {', '.join(map(str, a))}" if a == b
                 else f"seeds {', '.join(map(str, a))} against {', '.join(map(str, b))}")
        text += f", plus the test-sample noise over {sample['items']:,} images of {seeds}"
    if m["interval"].get("family", 1) > 1:
        text += f"; {p_value(m['interval'])}, Holm-adjusted {m['interval']['p_holm']:.2g} over the family of " \
                f"{m['interval']['family']} comparisons"
    return text + ")"


def seed_tests(tests: list[dict]) -> str:
    """The per-seed paired tests, compactly: the test's name once, then each seed's p-value."""
    if not tests:
        return "—"
    name = "McNemar" if "only_a" in tests[0] else "paired bootstrap"
    return f"{name}, by seed: " + ", ".join(f"{t['seed']}: {p_value(t).removeprefix('p = ')}" for t in tests)


def machine(provenance: dict) -> str:
    """Where a run trained, as "CPU name (vendor, family F, model M; speed flags)": what tells kinds apart."""
    ids = (f"{provenance.get('cpu_vendor')}, family {provenance.get('cpu_family')}, model {provenance.get('cpu_model')}"
           if provenance.get("cpu_family") is not None else "family and model not recorded")
    return f"{provenance.get('cpu') or '—'} ({ids}; {' '.join(provenance.get('cpu_flags') or []) or 'no speed flags'})"


def declared_machine(declared: dict) -> str:
    """An experiment's declared machine (experiments.yaml's `machine`) in words: "a CPU of family 6, model 167,
    device cpu, in bf16"."""
    cpu = ", ".join(f"{word} {declared[k]}" for k, word in (("cpu_family", "family"), ("cpu_model", "model"))
                    if k in declared)
    parts = [f"a CPU of {cpu}" if cpu else "", f"device {declared['device']}" if "device" in declared else "",
             f"in {declared['precision']}" if "precision" in declared else ""]
    return ", ".join(p for p in parts if p)


def code(value) -> Markup:
    """A value as an inline code span ("(empty)" for the empty string), shown as written: Markdown escapes a code
    span's content itself (so HTML-escaping it too would show entities) and the fence outruns any backticks inside."""
    text = str(value).replace("\n", " ")
    if not text:
        return Markup("(empty)")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def verbatim(value) -> Markup:
    """A line inside a fenced code block, which Markdown shows as text itself; no newline can end the block."""
    return Markup(str(value).replace("\n", " "))


def sides(config: dict) -> list[int]:
    """The image side of each epoch of a saved ResNet config, as training takes it."""
    return image_sides(config_from_dict("cls", config))


def pixels(config: dict) -> int:
    """Pixels per training image summed over a saved ResNet config's epochs: a run's work up to the cost per pixel,
    which is not the same at every image side on a CPU."""
    return sum(side ** 2 for side in sides(config))


def environment() -> Environment:
    """Every value a template shows is HTML-escaped (autoescape): corpus lines, model outputs, class names and
    captions from data reach the page as text, never as markup; macros and `cell` return what is already safe."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True, autoescape=True)
    env.filters.update(percent=percent, number=number, minutes=minutes, cell=cell, metric=metric, code=code,
                       verbatim=verbatim, delta=delta, sd=sd, verdict_interval=verdict_interval,
                       seed_tests=seed_tests, p_value=p_value, machine=machine, pixels=pixels,
                       declared_machine=declared_machine,
                       image_sides=sides)
    env.tests["uncommitted"] = uncommitted
    env.globals.update(percent=percent, number=number, adam_betas=ADAM_BETAS, adam_eps=ADAM_EPS,
                       min_lender_seeds=MIN_LENDER_SEEDS)
    return env


def _check_manifest(manifest, path: Path) -> None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("figures"), list) \
            or not isinstance(manifest.get("numbers"), list):
        raise PipelineError(f"{path} should be an object with a 'figures' list and a 'numbers' list; "
                            "run `make figures` again.")
    for i, figure in enumerate(manifest["figures"]):
        missing = {"id", "path", "title", "caption", "alt", "model"} - set(figure)
        if missing:
            raise PipelineError(f"{path}: figure {i} lacks {', '.join(sorted(missing))}; run `make figures` again.")


def run_record(paths: Paths, model: str) -> dict:
    """A main run's record from site_assets, its config read by this version (a field added since the figures stage
    wrote the record, which it does only where the run was trained, shows the value the run trained with), and the
    fields in which it differs from today's defaults."""
    run = read_json(paths.site_assets / model / "run.json", f"{model} run record")
    config = saved_config(model, run["config"])
    return {**run, "config": config, "differs_from_default": changed_fields(model, config, CONFIGS[model]())}


def context(paths: Paths) -> dict:
    """Everything the templates may show, read from site_assets."""
    manifest = read_json(paths.manifest, "figure manifest (run `make figures`)")
    _check_manifest(manifest, paths.manifest)
    models = {}
    for model in ("cls", "mt"):
        models[model] = {
            "metrics": read_json(paths.site_assets / model / "metrics.json", f"{model} metrics"),
            "run": run_record(paths, model),
            "timings": read_json(paths.site_assets / model / TIMINGS, f"{model} stage timings"),
            "figures": {f["id"]: f for f in manifest["figures"] if f["model"] == model},
        }
    models["mt"]["decodes"] = read_json(paths.site_assets / "mt" / "decode_table.json", "decode table")
    experiments = {r["name"]: {**r, "figures": {f["id"].removeprefix(f"exp_{r['name']}_"): f
                                                for f in manifest["figures"] if f.get("experiment") == r["name"]}}
                   for r in experiment_results(paths)}
    index = read_json(paths.site_assets / "experiments" / "index.json", "experiment index") \
        if (paths.site_assets / "experiments" / "index.json").exists() else {}
    insights = read_json(paths.site_assets / "experiments" / INSIGHTS, "insights tests (run `make figures`)")
    return {"manifest": manifest, "numbers": {n["id"]: n for n in manifest["numbers"]}, "rule": RULE,
            "cls": models["cls"], "mt": models["mt"], "experiments": experiments, "insights": insights,
            "planned_experiments": index.get("planned", []), "uncounted_runs": index.get("uncounted", {}),
            "assets": f"../{ASSETS_LINK}"}


def _mirror_handwritten(paths: Paths) -> None:
    """Outside the repository, give the root the hand-written pages and an mkdocs.yml inheriting ours.
    (An installed package has no checkout to mirror: it renders the pages, the site is built from a checkout.)"""
    if paths.root == REPO or not (REPO / "mkdocs.yml").is_file():
        return
    for source in (REPO / "docs").rglob("*"):
        relative = source.relative_to(REPO / "docs")
        if relative.parts[0] in ("generated", ASSETS_LINK) or source.is_dir():
            continue
        target = paths.docs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    link = paths.docs / ASSETS_LINK
    if link.exists() and not link.is_symlink():
        raise PipelineError(f"{link} is a folder or file of its own, where the pages expect a link to ../site_assets "
                            "(a copy of the root that followed the link makes one): move it aside and render the "
                            "pages again, and they link it.")
    if not link.is_symlink():
        link.symlink_to(Path("..") / "site_assets", target_is_directory=True)
    write_text(paths.root / "mkdocs.yml", f"INHERIT: {REPO / 'mkdocs.yml'}\nhooks:\n  - {HOOKS}\n")


def _render(env: Environment, template: str, ctx: dict) -> str:
    try:
        return env.get_template(template).render(ctx)
    except TemplateError as e:
        raise PipelineError(f"{TEMPLATES / template}: {type(e).__name__}: {e}") from None


def rendered_pages(paths: Paths) -> dict[str, str]:
    """Every generated page's text by its path under docs/generated/: the fixed pages and one per experiment."""
    ctx = context(paths)
    env = environment()
    pages = {page: _render(env, template, ctx) for template, page in PAGES.items()}
    for name, result in ctx["experiments"].items():
        pages[f"experiments/{name}.md"] = _render(env, EXPERIMENT_PAGE, {**ctx, "e": result,
                                                                           "assets": f"../../{ASSETS_LINK}"})
    return pages


BENCHMARKS = "BENCHMARKS.md"  # at the root, beside the README


def rendered_benchmarks(paths: Paths) -> str:
    """BENCHMARKS.md: every run's numbers, read from the comparison stage's summaries and the main runs."""
    ctx = context(paths)
    runs_file = paths.site_assets / "experiments" / "runs.json"
    summaries = read_json(runs_file, "run summaries (run `make figures`)") if runs_file.exists() else {}
    main_runs = {model: ctx[model]["run"] for model in ("cls", "mt")}
    return _render(environment(), "benchmarks.md.j2", {**ctx, "benchmark_runs": summaries.get("runs", []),
                                                       "speed": summaries.get("speed", []), "main_runs": main_runs,
                                                       "default_timings": summaries.get("default_timings", [])})


def render_pages(paths: Paths) -> list[Path]:
    """Render every page into docs/generated/ (and BENCHMARKS.md beside the README); drop pages of experiments
    that no longer have runs."""
    pages = rendered_pages(paths)
    write_text(paths.root / BENCHMARKS, rendered_benchmarks(paths))
    stale = set(paths.generated_docs.glob("experiments/*.md")) - {paths.generated_docs / p for p in pages}
    for page in stale:  # an experiment whose runs were deleted
        page.unlink()
    written = []
    for page, text in pages.items():
        write_text(paths.generated_docs / page, text)
        written.append(paths.generated_docs / page)
    _mirror_handwritten(paths)
    return written
