"""The pages stage: site_assets (manifest, metrics, run records) -> Jinja templates -> docs/generated/.

Never imports torch: it reads only what the figures stage wrote."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError
from markupsafe import Markup, escape

from pipeline.config import REPO, Paths, PipelineError, uncommitted
from pipeline.compare.experiments import experiment_results
from pipeline.compare.stats import RULE
from pipeline.io import TIMINGS, read_json, write_text
from pipeline.report.claims import JINJA_GLOBALS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"  # package data: works installed too
PAGES = {  # template -> page under docs/generated/
    "home.md.j2": "home.md",
    "resnet.md.j2": "resnet.md",
    "transformer.md.j2": "transformer.md",
    "insights.md.j2": "insights.md",
    "reproducibility.md.j2": "reproducibility.md",
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


def training_interval(training: dict | None, name: str) -> str:
    """The 95 % interval of a difference over training noise, with the method that gave it."""
    if training is None:
        return "not enough runs"
    return (f"{_points(training['low'], name):+.2f} to {_points(training['high'], name):+.2f} "
            f"({training['method']})")


def sample_tests(tests: list[dict] | None, name: str) -> str:
    """The paired tests on the test items, in words; why there are none where there are none."""
    if tests is None:
        return "not possible: the runs kept no per-item test predictions"
    if not tests:
        return "— (not scored per test item)"
    words = []
    for t in tests:
        if "p_value" in t and "only_a" in t:
            words.append(f"McNemar's exact test, seed {t['seed']}: p = {t['p_value']:.2g} "
                         f"({t['only_a']} against {t['only_b']} images right in one arm only)")
        elif "p_value" in t:
            words.append(f"{t['method']}, seed {t['seed']}: p = {t['p_value']:.2g} on {t['items']} sentences")
        else:
            words.append(f"{t['method']}: {_points(t['low'], name):+.2f} to {_points(t['high'], name):+.2f}")
    return "; ".join(words)


def machine(provenance: dict) -> str:
    """Where a run trained, as "CPU name (vendor, family F, model M; speed flags)": what tells kinds apart."""
    ids = (f"{provenance.get('cpu_vendor')}, family {provenance.get('cpu_family')}, model {provenance.get('cpu_model')}"
           if provenance.get("cpu_family") is not None else "family and model not recorded")
    return f"{provenance.get('cpu') or '—'} ({ids}; {' '.join(provenance.get('cpu_flags') or []) or 'no speed flags'})"


def code(value) -> Markup:
    """A value as an inline code span, shown as written: Markdown escapes a code span's content itself (so
    HTML-escaping it too would show entities) and the fence outruns any backticks inside."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def verbatim(value) -> Markup:
    """A line inside a fenced code block, which Markdown shows as text itself; no newline can end the block."""
    return Markup(str(value).replace("\n", " "))


def environment() -> Environment:
    """Every value a template shows is HTML-escaped (autoescape): corpus lines, model outputs, class names and
    captions from data reach the page as text, never as markup; macros and `cell` return what is already safe."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True, autoescape=True)
    env.filters.update(percent=percent, number=number, minutes=minutes, cell=cell, metric=metric, code=code,
                       verbatim=verbatim, delta=delta, sd=sd, training_interval=training_interval,
                       sample_tests=sample_tests, machine=machine)
    env.tests["uncommitted"] = uncommitted
    env.globals.update(JINJA_GLOBALS, percent=percent, number=number)
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


def context(paths: Paths) -> dict:
    """Everything the templates may show, read from site_assets."""
    manifest = read_json(paths.manifest, "figure manifest (run `make figures`)")
    _check_manifest(manifest, paths.manifest)
    models = {}
    for model in ("cls", "mt"):
        models[model] = {
            "metrics": read_json(paths.site_assets / model / "metrics.json", f"{model} metrics"),
            "run": read_json(paths.site_assets / model / "run.json", f"{model} run record"),
            "timings": read_json(paths.site_assets / model / TIMINGS, f"{model} stage timings"),
            "figures": {f["id"]: f for f in manifest["figures"] if f["model"] == model},
        }
    models["mt"]["decodes"] = read_json(paths.site_assets / "mt" / "decode_table.json", "decode table")
    experiments = {r["name"]: {**r, "figures": {f["id"].removeprefix(f"exp_{r['name']}_"): f
                                                for f in manifest["figures"] if f.get("experiment") == r["name"]}}
                   for r in experiment_results(paths)}
    index = read_json(paths.site_assets / "experiments" / "index.json", "experiment index") \
        if (paths.site_assets / "experiments" / "index.json").exists() else {}
    return {"manifest": manifest, "numbers": {n["id"]: n for n in manifest["numbers"]}, "rule": RULE,
            "cls": models["cls"], "mt": models["mt"], "experiments": experiments,
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
                                                       "speed": summaries.get("speed", []), "main_runs": main_runs})


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
