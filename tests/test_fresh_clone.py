"""A fresh clone: retraining its main run over the committed files keeps the run traceable to its commit and
loses no experiment page."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import REPO, NUMBER_INPUTS

pytestmark = pytest.mark.slow


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_main_run_retrained_in_a_clean_clone_records_a_clean_commit_and_keeps_every_experiment(tmp_path):
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", str(REPO), str(clone))
    # The clone holds this checkout's code as its commit, so the test exercises the code under test.
    for path in NUMBER_INPUTS:
        source = REPO / path
        if source.is_dir():
            shutil.rmtree(clone / path)
            shutil.copytree(source, clone / path, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, clone / path)
    _git(clone, "add", "-A", *[p for p in NUMBER_INPUTS if (clone / p).exists()])
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "code")
    head = _git(clone, "rev-parse", "HEAD").strip()
    env = {**os.environ, "PIPELINE_ROOT": str(clone), "PIPELINE_EXPERIMENTS": str(clone / "experiments.yaml"),
           "PIPELINE_COUNT_UNCOMMITTED": "0"}
    before = json.loads((clone / "site_assets" / "experiments" / "index.json").read_text())["experiments"]
    # Twice: the second run starts over the committed run files the first one rewrote.
    for stage in (["train", "mt", "--profile", "smoke"], ["train", "mt", "--profile", "smoke"], ["compare"]):
        done = subprocess.run([sys.executable, "-m", "pipeline", *stage], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    provenance = json.loads((clone / "runs" / "mt" / "main" / "provenance.json").read_text())
    assert provenance["git_commit"] == head  # the rewritten committed run files do not make it "-dirty"
    assert _git(clone, "status", "--porcelain", "--untracked-files=no", "--", "runs")  # they were rewritten
    after = json.loads((clone / "site_assets" / "experiments" / "index.json").read_text())["experiments"]
    assert after == before


def test_make_site_on_a_fresh_clone_rebuilds_the_committed_report_and_never_trains(tmp_path):
    """A fresh clone's file times are the order git wrote them in; the Make graph must not read them as "a run's
    arrays changed": only the stages that need no run (compare, figures of experiments, pages, site) may run."""
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", str(REPO), str(clone))
    shutil.copy2(REPO / "Makefile", clone / "Makefile")  # this checkout's graph
    dry = subprocess.run(["make", "-n", "site", f"BIN={Path(sys.executable).parent}"], cwd=clone,
                         capture_output=True, text=True, check=True).stdout
    for stage in ("pipeline train", "pipeline evaluate", "pipeline figures cls", "pipeline figures mt",
                  "pipeline notebooks"):
        assert stage not in dry
    assert "mkdocs build" in dry
