"""What a user reads and types: the option parser, make help, the README, the packaging, the workflows."""

import dataclasses
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from packaging.markers import Marker

from pipeline.__main__ import build_parser, main
from pipeline.config import CONFIGS, REPO, PipelineError, field_help, make_config, options_table

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("model", list(CONFIGS))
def test_help_lists_every_field_with_type_default_and_meaning(model, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", model, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    helps = field_help(CONFIGS[model])
    for field in dataclasses.fields(CONFIGS[model]):
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        assert f"--{field.name} {kind.upper()} {helps[field.name]} (default: {field.default})" in text, field.name
        assert helps[field.name], f"{field.name} has no comment in pipeline/config.py"


def test_both_option_spellings_and_a_suggestion_for_a_misspelt_one(capsys):
    config = make_config("cls", "full", ["--epochs=3", "--lr", "0.2", "--test_tta", "false"])
    assert (config.epochs, config.lr, config.test_tta) == (3, 0.2, False)
    assert main(["train", "cls", "--label_smothing", "0.1"]) == 2
    assert "unknown option '--label_smothing'. Did you mean --label_smoothing?" in capsys.readouterr().err
    with pytest.raises(PipelineError, match=r"unknown option '--lable_smoothing'\. Did you mean --label_smoothing\?"):
        make_config("mt", "full", ["--lable_smoothing", "0.2"])
    with pytest.raises(PipelineError, match="--epoch"):
        make_config("cls", "full", ["--epoch", "3"])  # no silent abbreviation


def _make_help() -> list[str]:
    """`make help`'s lines ("  make TARGET  what it does")."""
    return subprocess.run(["make", "--no-print-directory", "help", "BIN=/nonexistent"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.splitlines()  # no "Entering directory" lines under make test


def test_readme_lists_exactly_the_targets_of_make_help():
    from_make = [tuple(line.strip().removeprefix("make ").split(None, 1)) for line in _make_help()]
    section = README.split("## Make targets", 1)[1].split("\n## ", 1)[0]
    from_readme = re.findall(r"^\| `make ([\w-]+)` \| (.+) \|$", section, flags=re.M)
    assert from_readme == from_make


def _make_commands(text: str) -> list[str]:
    """The targets of each `make ... # comment` line in a text's first bash block."""
    return re.findall(r"^make ([\w -]+?)\s+#", text.split("```bash", 1)[1].split("```", 1)[0], flags=re.M)


def test_the_reproducibility_pages_commands_are_make_targets_and_the_readmes_main_job():
    targets = {line.split()[1] for line in _make_help()}
    page = _make_commands((REPO / "pipeline" / "templates" / "reproducibility.md.j2").read_text())
    assert page and all(set(c.split()) <= targets for c in page), page
    assert page[:2] == _make_commands(README)[:2]  # the main job and the tests, as the README gives them


@pytest.mark.parametrize("model", list(CONFIGS))
def test_readme_option_tables_are_the_config_fields(model):
    assert options_table(model) in README


def _imported_top_level_modules() -> set[str]:
    names = set()
    for path in (REPO / "pipeline").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) ([A-Za-z_]\w*)", path.read_text(), flags=re.M):
            names.add(match.group(1))
    return names - set(sys.stdlib_module_names) - {"pipeline"}


def test_every_imported_package_is_declared():
    declared = {re.split(r"[<>=!\[ ;]", req)[0].lower().replace("_", "-")
                for req in importlib.metadata.requires("dl-report") or []}
    providers = importlib.metadata.packages_distributions()
    for module in _imported_top_level_modules():
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert distributions & declared, f"{module} is imported by pipeline/ but no dependency provides it"


def test_make_installs_only_into_its_own_venv():
    dry = subprocess.run(["make", "-n", "train", "report", "BIN=/some/env/bin", "ROOT=/nonexistent"], cwd=REPO,
                         capture_output=True, text=True)
    assert "pip install" not in dry.stdout and "/some/env/bin/python -m pipeline train" in dry.stdout
    dry = subprocess.run(["make", "-n", "-B", "setup", "VENV=/tmp/elsewhere"], cwd=REPO, capture_output=True,
                         text=True)
    assert "pip install" in dry.stdout and "/tmp/elsewhere" not in dry.stdout
    assert ".venv/bin/python -m pip" in dry.stdout


def _dry_run(*args: str) -> str:
    return subprocess.run(["make", "-n", *args, "BIN=/some/env/bin"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("code, stage", [
    ("pipeline/compare/stats.py", "-m pipeline compare"),
    ("pipeline/compare/insights.py", "-m pipeline compare"),
    ("pipeline/figures/experiments.py", "-m pipeline figures experiments"),
    ("pipeline/figures/build.py", "-m pipeline manifest"),
    ("pipeline/report/pages.py", "-m pipeline pages"),
    ("pipeline/templates/experiments/experiment.md.j2", "-m pipeline pages"),
])
def test_a_stages_outputs_are_rebuilt_when_its_code_changes_and_the_site_never_trains(code, stage):
    """make -W FILE: as if FILE had just been edited (on the site's file itself: -W does not reach the sub-make that
    `make site` runs). The committed runs build the site; nothing trains."""
    assert "-m pipeline train" not in _dry_run("site")
    rebuilt = _dry_run("-W", code, "./site/index.html")
    assert stage in rebuilt and "-m pipeline train" not in rebuilt
    assert "-m pipeline pages" in _dry_run("-W", code, "BENCHMARKS.md")  # the pages stage's other output


def test_make_experiments_trains_a_main_run_first_only_where_the_checkout_has_none(tmp_path):
    """A fresh clone's committed main runs (metric files, no checkpoint) are finished runs to the experiments, so
    `make experiments` there retrains neither (`make train` does); where a main run is missing it trains first."""
    for model in ("cls", "mt"):
        (tmp_path / "runs" / model / "main").mkdir(parents=True)
        (tmp_path / "runs" / model / "main" / "final.json").write_text("{}")
    assert "-m pipeline train" not in _dry_run("experiments", f"ROOT={tmp_path}")
    (tmp_path / "runs" / "mt" / "main" / "final.json").unlink()
    dry = _dry_run("experiments", f"ROOT={tmp_path}")
    assert "-m pipeline train mt" in dry and "-m pipeline train cls" not in dry


def test_main_runs_metric_files_are_committed_and_make_trains_a_main_run_that_has_only_those(tmp_path):
    """A fresh checkout holds the main runs' metric files, not their checkpoints or test outputs: the comparison
    can read them, and `make train` still trains (a finished run's test outputs tell it the run is here)."""
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "runs/mt/main/final.json",
                              "runs/mt/main/test_predictions.json", "runs/mt/main/checkpoint.pt",
                              "runs/mt/main/test_outputs.json", "runs/cls/main/test_outputs.npz"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == ["runs/mt/main/checkpoint.pt", "runs/mt/main/test_outputs.json", "runs/cls/main/test_outputs.npz"]
    main = tmp_path / "runs" / "mt" / "main"
    main.mkdir(parents=True)
    for name in ("config.json", "provenance.json", "metrics.jsonl", "final.json", "test_predictions.json"):
        (main / name).write_text("{}")

    def planned() -> str:
        return subprocess.run(["make", "-n", "train-mt", f"ROOT={tmp_path}", "BIN=/some/env/bin"], cwd=REPO,
                              capture_output=True, text=True).stdout

    assert "-m pipeline train mt" in planned()
    (main / "test_outputs.json").write_text("[]")
    assert "-m pipeline train mt" not in planned()


def test_workflows_test_on_push_and_build_the_site_from_the_projects_metadata():
    tests = yaml.safe_load((REPO / ".github" / "workflows" / "test.yml").read_text())
    assert {"push", "pull_request"} <= set(tests[True])  # YAML reads the key `on` as True
    assert any(step.get("run", "").strip() == "make test" for job in tests["jobs"].values() for step in job["steps"])
    site = (REPO / ".github" / "workflows" / "site.yml").read_text()
    assert "['optional-dependencies']['site']" in site and "mkdocs>=" not in site
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, flags=re.M) and 'setuptools>=77' in pyproject


def test_an_installed_wheel_renders_the_pages(tmp_path):
    """Templates ship as package data: the pages render from an installed copy, no checkout needed."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "deprecated" not in (built.stdout + built.stderr).lower()
    (wheel,) = (tmp_path / "dist").glob("dl_report-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "installed")
    assert "pipeline/templates/insights.md.j2" in names and "pipeline/templates/notebooks/resnet.py" in names
    root = tmp_path / "root"
    shutil.copytree(REPO / "site_assets", root / "site_assets")
    rendered = subprocess.run([sys.executable, "-c", "import pipeline, sys; from pipeline.report.pages import "
                               "render_pages; from pipeline.config import Paths; "
                               f"assert pipeline.__file__.startswith({str(tmp_path / 'installed')!r}); "
                               f"render_pages(Paths(__import__('pathlib').Path({str(root)!r})))"],
                              cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert (root / "docs" / "generated" / "insights.md").read_text().startswith("# Key insights")


def test_notebooks_stage_executes_only_the_notebooks_named(tmp_path, monkeypatch, capsys):
    from pipeline.report import notebooks

    executed, kernels = [], []

    class Client:  # what is executed is tested here; executing them for real is tested on the built report
        def __init__(self, notebook, **kwargs):
            self.notebook = notebook

        def execute(self, env):
            executed.append(self.notebook.cells[0].source.splitlines()[0])
            kernels.append(env["PIPELINE_ROOT"])

    monkeypatch.setattr(notebooks, "NotebookClient", Client)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path))
    assert main(["notebooks", "transformer"]) == 0
    assert len(executed) == 1 and "Transformer" in executed[0]
    assert kernels == [str(tmp_path)]  # the kernel is told the root; this process's environment is left alone
    assert [p.name for p in (tmp_path / "docs" / "generated" / "notebooks").iterdir()] == ["transformer.ipynb"]
    assert main(["notebooks", "transformer", "gan"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no notebook named gan" in err and "there are resnet, transformer" in err
    assert main(["notebooks"]) == 0 and len(executed) == 3


def _locked(name: str) -> dict[str, str]:
    """A lock's pins for this interpreter and platform (its environment markers evaluated as pip evaluates them);
    every pin carries its hashes."""
    text = (REPO / "requirements" / name).read_text()
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)(?: ; ([^\\]+))? \\$", text, flags=re.M)
    blocks = re.split(r"\n(?=[A-Za-z0-9._-]+==)", text)[1:]
    assert pins and len(blocks) == len(pins) and all("--hash=sha256:" in block for block in blocks), name
    return {k.lower().replace("_", "-"): v for k, v, marker in pins if not marker or Marker(marker).evaluate()}


def test_the_environment_is_the_lock():
    """make setup installs run.lock and make test dev.lock, hashed; both agree, and the packages installed here
    are exactly the locked versions (as pip freeze would list them)."""
    run, dev = _locked("run.lock"), _locked("dev.lock")
    assert run and set(run) <= set(dev) and all(dev[k] == v for k, v in run.items())
    assert {"torch", "sentencepiece", "sacrebleu", "scipy", "mkdocs-material", "pytest"} <= set(dev)
    assert "pytest" not in run and "grad-cam" not in run  # the user's install holds only what the user needs
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in importlib.metadata.distributions()}
    assert {k: v for k, v in dev.items() if installed.get(k) != v} == {}
