"""Command line: python -m pipeline <stage> [model] [--profile NAME] [--resume] [--key value ...]

stages: train MODEL, bench MODEL, evaluate MODEL, figures MODEL, manifest, pages, notebooks
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from pipeline.config import PipelineError, default_paths, make_config

STAGES = ["train", "bench", "evaluate", "figures", "manifest", "pages", "notebooks"]
MODEL_STAGES = {"train", "bench", "evaluate", "figures"}


def _run(args: argparse.Namespace, overrides: list[str]) -> None:
    paths = default_paths()
    if args.stage == "train":
        from pipeline.train import train

        train(args.model, make_config(args.model, args.profile, overrides), paths, resume=args.resume)
    elif args.stage == "bench":
        from pipeline.bench import bench

        bench(args.model, args.profile, overrides)
    elif args.stage == "evaluate":
        if args.model == "cls":
            from pipeline.evaluate.cls import evaluate_cls as evaluate
        else:
            from pipeline.evaluate.mt import evaluate_mt as evaluate
        evaluate(paths)
    elif args.stage == "figures":
        from pipeline.figures.build import build_figures

        print(f"{len(build_figures(paths, args.model))} {args.model} figures in {paths.site_assets / args.model}")
    elif args.stage == "manifest":
        from pipeline.figures.build import write_manifest

        write_manifest(paths)
    elif args.stage == "pages":
        from pipeline.report.pages import render_pages

        render_pages(paths)
    elif args.stage == "notebooks":
        from pipeline.report.notebooks import execute_notebooks

        execute_notebooks(paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("model", nargs="?", choices=["cls", "mt"])
    parser.add_argument("--profile", default="full", help="full (default) or smoke")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    args, overrides = parser.parse_known_args(argv)
    if args.stage in MODEL_STAGES and args.model is None:
        parser.error(f"{args.stage} needs a model: cls or mt")
    if overrides and args.stage not in ("train", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    try:
        _run(args, overrides)
    except PipelineError as e:
        print("\n" + textwrap.fill(f"error: {e}", width=100), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
