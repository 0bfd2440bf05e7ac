"""Where and from what code the runs of a page trained, from their provenance: the CPU kind, device and precision,
and whether the training code differs between their commits."""

from __future__ import annotations

import subprocess

from pipeline.config import REPO, TRAINING_CODE, uncommitted

# What a run's provenance says about where and how it ran: arms that differ in any of these differ in more than
# their config, and the page says so.
PROVENANCE_FIELDS = ("precision", "processes", "device", "cpu", "cpu_family", "cpu_model", "threads")


def machine(provenance: dict) -> str:
    """A CPU as "name (family F, model M)"."""
    return f"{provenance.get('cpu')} (family {provenance.get('cpu_family')}, model {provenance.get('cpu_model')})"


def where(provenance: dict) -> str:
    """A run's CPU kind, device and precision: the runs whose times can be pooled."""
    return f"{machine(provenance)}, {provenance.get('device')}, {provenance.get('precision')}"


def machines_of(records: list) -> list[dict]:
    """The CPU kinds and precisions the runs trained on, with how many runs each."""
    machines: dict[str, int] = {}
    for r in records:
        key = f"{machine(r.provenance)}, {r.provenance.get('precision')}"
        machines[key] = machines.get(key, 0) + 1
    return [{"machine": m, "runs": n} for m, n in sorted(machines.items())]


def runs_mix(records: list) -> dict:
    """What the runs of one comparison page mix: the commits they were trained from (and whether the training
    code differs between them), and the CPU kinds and precisions they trained on."""
    commits = sorted({r.commit for r in records})
    return {"commits": commits, "training_code_changes": training_code_changes(commits),
            "machines": machines_of(records)}


def training_code_changes(commits: list[str]) -> list[str] | None:
    """The files of the training code (TRAINING_CODE) that differ between the first commit and any other, from the
    repository's history; None where it cannot tell (no git, a commit it does not hold, an uncommitted tree)."""
    if any(uncommitted(c) for c in commits):
        return None
    changed: set[str] = set()
    for other in commits[1:]:
        try:
            out = subprocess.run(["git", "diff", "--name-only", commits[0], other, "--", *TRAINING_CODE], cwd=REPO,
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        changed.update(out.stdout.split())
    return sorted(changed)
