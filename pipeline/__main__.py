"""Command line: python -m pipeline STAGE [MODEL] [options]; `python -m pipeline STAGE MODEL --help` lists them.

stages: train MODEL, bench MODEL, evaluate MODEL, figures MODEL, manifest, pages, notebooks
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from pipeline.config import CONFIGS, MAIN_RUN, MODEL_TITLES, OptionParser, PipelineError, add_config_options, \
    default_paths, make_config


def build_parser() -> OptionParser:
    parser = OptionParser(prog="python -m pipeline", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE", parser_class=OptionParser)
    for stage, what in (("train", "train a model into runs/MODEL/NAME/ (resumable)"),
                        ("bench", "train the default run if missing, then print its benchmark tables")):
        models = stages.add_parser(stage, help=what).add_subparsers(dest="model", required=True, metavar="MODEL",
                                                                     parser_class=OptionParser)
        for model in CONFIGS:
            sub = models.add_parser(model, help=MODEL_TITLES[model], description=f"{what}: {MODEL_TITLES[model]}.")
            sub.add_argument("--profile", default="full", help="full (default) or smoke: a tiny run of seconds")
            sub.add_argument("--name", default=MAIN_RUN, help=f"the run's folder under runs/{model}/ "
                                                              f"(default: {MAIN_RUN})")
            if stage == "train":
                sub.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
            add_config_options(sub, model)
    for stage, what in (("evaluate", "score a run's test outputs, draw Grad-CAM / attention data"),
                        ("figures", "draw a model's figures into site_assets/MODEL/")):
        sub = stages.add_parser(stage, help=what)
        sub.add_argument("model", choices=list(CONFIGS))
    for stage, what in (("manifest", "list every figure and headline number in site_assets/manifest.json"),
                        ("pages", "render the templates into docs/generated/"),
                        ("notebooks", "execute the notebooks into docs/generated/notebooks/")):
        stages.add_parser(stage, help=what)
    return parser


def _run(args: argparse.Namespace) -> None:
    paths = default_paths()
    if args.stage in ("train", "bench"):
        options = {k: v for k, v in vars(args).items() if k not in ("stage", "model", "profile", "name", "resume")}
        config = make_config(args.model, args.profile, options)
        if args.stage == "train":
            from pipeline.train import train

            train(args.model, config, paths.run(args.model, args.name), paths, resume=args.resume)
        else:
            from pipeline.bench import bench

            bench(args.model, config, paths.run(args.model, args.name), paths)
    elif args.stage == "evaluate":
        from pipeline.evaluate import evaluate

        evaluate(args.model, paths)
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
    try:
        _run(build_parser().parse_args(argv))
    except PipelineError as e:
        print("\n" + textwrap.fill(f"error: {e}", width=100), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
