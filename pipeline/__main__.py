"""Command line: python -m pipeline <stage> [model] [--profile NAME] [--resume] [--key value ...]."""

from __future__ import annotations

import argparse
import sys
import textwrap

from pipeline.config import PipelineError, default_paths, make_config


def _train(model: str, profile: str, overrides: list[str], resume: bool) -> None:
    from pipeline.train.runner import run

    paths = default_paths()
    config = make_config(model, profile, overrides)
    if model == "cls":
        from pipeline.train.cls import ClsTask as Task
    else:
        from pipeline.train.mt import MtTask as Task
    run(Task(config, paths), model, paths.run(model), resume=resume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("stage", choices=["train", "bench"])
    parser.add_argument("model", choices=["cls", "mt"])
    parser.add_argument("--profile", default="full", help="full (default) or smoke")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    args, overrides = parser.parse_known_args(argv)
    try:
        if args.stage == "train":
            _train(args.model, args.profile, overrides, args.resume)
        else:
            from pipeline.bench import bench

            bench(args.model, args.profile, overrides)
    except PipelineError as e:
        print("\n" + textwrap.fill(f"error: {e}", width=100), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
