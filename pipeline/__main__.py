"""Command line: python -m pipeline STAGE [MODEL] [options]; `python -m pipeline STAGE MODEL --help` lists them.

stages: train MODEL, bench MODEL, split FOLDER, experiments [NAME ...], evaluate MODEL, compare,
        figures MODEL|experiments, manifest, pages, notebooks
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from pipeline.config import CONFIGS, MAIN_RUN, MODEL_TITLES, PROFILES, OptionParser, PipelineError, \
    add_config_options, default_paths, make_config

# Apple's MPS lacks a few kernels: with this set, an op it lacks runs on the CPU instead, and torch prints a warning
# naming the op. torch reads it once, when it is imported, so it is set here, before any stage imports torch.
if sys.platform == "darwin":
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


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
            sub.add_argument("--profile", default="full", choices=list(PROFILES[model]),
                             help="full (the default recipe), smoke (a tiny run of seconds)"
                                  + (", short (the harder ~132k-pair subset), long (the ~35k pairs of longer "
                                     "sentences)" if "short" in PROFILES[model] else ""))
            sub.add_argument("--name", default=MAIN_RUN, help=f"the run's folder under runs/{model}/ "
                                                              f"(default: {MAIN_RUN})")
            if stage == "train":
                sub.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
            elif model == "cls":
                sub.add_argument("--speed_only", action="store_true",
                                 help="only time the training step eager and under torch.compile (minutes, no run)")
            add_config_options(sub, model)
    what = "write the translation split a Transformer run with these options draws as train.tsv, valid.tsv, test.tsv"
    sub = stages.add_parser("split", help=what, description=f"{what}: to train on as a published split "
                            "(--corpus FOLDER), or to score other systems on the same sentences.")
    sub.add_argument("folder", help="where the three files go")
    sub.add_argument("--profile", default="full", choices=list(PROFILES["mt"]), help="the profile's corpus")
    add_config_options(sub, "mt")
    sub = stages.add_parser("experiments", help="train the missing runs of experiments.yaml (resumes), then compare")
    sub.add_argument("names", nargs="*", metavar="NAME", help="only these experiments (default: all)")
    sub = stages.add_parser("evaluate", help="evaluate a model's main run: predictions, Grad-CAM, decodes, attention")
    sub.add_argument("model", choices=list(CONFIGS))
    sub = stages.add_parser("figures", help="draw a model's figures into site_assets/MODEL/, or the experiments'")
    sub.add_argument("model", choices=[*CONFIGS, "experiments"])
    stages.add_parser("compare", help="compare the finished runs of every experiment into site_assets/experiments/")
    for stage, what in (("manifest", "list every figure and headline number in site_assets/manifest.json"),
                        ("pages", "render the templates into docs/generated/")):
        stages.add_parser(stage, help=what)
    sub = stages.add_parser("notebooks", help="execute the notebooks into docs/generated/notebooks/")
    sub.add_argument("names", nargs="*", metavar="NAME",
                     help="only these, by file name in pipeline/templates/notebooks/ (default: all), e.g. the one "
                          "whose model's run is here")
    return parser


def _run(args: argparse.Namespace) -> None:
    paths = default_paths()
    if args.stage in ("train", "bench"):
        options = {k: v for k, v in vars(args).items()
                   if k not in ("stage", "model", "profile", "name", "resume", "speed_only")}
        config = make_config(args.model, args.profile, options)
        if args.stage == "train":
            from pipeline.train import train

            train(args.model, config, paths.run(args.model, args.name), paths, resume=args.resume)
        else:
            from pipeline.bench import bench

            bench(args.model, config, paths.run(args.model, args.name), paths, getattr(args, "speed_only", False))
    elif args.stage == "split":
        from pathlib import Path

        from pipeline.data.translation import write_split
        from pipeline.trained import load_splits

        options = {k: v for k, v in vars(args).items() if k not in ("stage", "folder", "profile")}
        splits, fingerprints = load_splits(make_config("mt", args.profile, options))
        counts = write_split(splits, Path(args.folder))
        print(f"{', '.join(f'{n} {f}' for f, n in counts.items())} pairs in {args.folder} (split "
              f"{fingerprints['split_fingerprint']}); train on it with --corpus {args.folder}")
    elif args.stage in ("experiments", "compare"):
        from pipeline.compare.experiments import compare_all
        from pipeline.experiments.definitions import load_experiments
        from pipeline.experiments.running import train_missing
        from pipeline.runtime import World

        experiments = load_experiments()
        if args.stage == "experiments":
            unknown = set(args.names) - {e.name for e in experiments}
            if unknown:
                raise PipelineError(f"No experiment named {', '.join(sorted(unknown))} in experiments.yaml; it has "
                                    f"{', '.join(e.name for e in experiments)}.")
            train_missing(paths, [e for e in experiments if not args.names or e.name in args.names])
        if World.from_env().main:  # under torchrun, rank 0 alone compares
            print(f"{len(compare_all(paths, experiments))} experiments with finished runs in "
                  f"{paths.site_assets / 'experiments'}")
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

        execute_notebooks(paths, args.names)


def main(argv: list[str] | None = None) -> int:
    try:
        _run(build_parser().parse_args(argv))
    except PipelineError as e:
        print("\n" + textwrap.fill(f"error: {e}", width=100), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
