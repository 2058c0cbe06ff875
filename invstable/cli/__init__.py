"""Command-line interface: ``invstable demo`` and the sub-commands of the other subpackages."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .._demo import demo

    demo(args.out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _models(args) -> int:
    from ..models import PRETRAINED, list_models, model_info, recommended

    shipped = list_models()
    for name, what in PRETRAINED.items():
        if name not in shipped:
            print(f"{name:<20} (not in this installation) {what}")
            continue
        info = model_info(name)
        if info["operator"] is None:  # a universal regulariser: any operator, presets tuned on validation
            presets = ", ".join(f"{task} {p['validation_psnr']:.2f} dB (bound {1 / (2 * p['strong_convexity'] ** 0.5):.2f})"
                                for task, p in info.get("presets", {}).items())
            steps = info.get("training", {}).get("steps", "?")
            print(f"{name:<20} {what}; trained {steps} steps as a denoiser; validation presets: {presets or 'none'}")
            continue
        rec = info.get("training", {})
        recipe = f"; recipe: {rec['recipe']}" if rec.get("recipe") else ""
        print(f"{name:<20} {what}; validation PSNR {rec.get('validation_psnr', float('nan')):.2f} dB, "
              f"certified Lipschitz bound {rec.get('lipschitz_bound', float('nan')):.2f}{recipe}")
    table = recommended()
    if table:
        print("\nload_model(task=...) returns (chosen on validation data; PSNR on the same validation images):")
        for task, choice in table.items():
            scores = ", ".join(f"{n} {row['validation_psnr']:.2f} dB (bound {row['lipschitz_bound']:.2f})"
                               for n, row in sorted(choice["candidates"].items(),
                                                    key=lambda kv: -kv[1]["validation_psnr"]))
            print(f"  {task:<8} {choice['name']}  [{choice['validation_count']} images: {scores}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invstable", description="Provably stable learned reconstructions for y = A x + noise.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="simulate CT-30 and Blur-G2 measurements and reconstruct them",
                          description="Simulate CT-30 and Blur-G2 measurements of built-in images, reconstruct them "
                                      "with the baselines and the shipped models, print a table and write a "
                                      "figure; a progress line per step goes to stderr.")
    demo.add_argument("--out", default="invstable_demo.png",
                      help="path of the PNG figure (default: %(default)s); missing folders are created; an existing "
                           "file is replaced only if it is an earlier demo figure")
    demo.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a demo figure")
    demo.add_argument("--seed", type=int, default=0, help="seed of the simulated noise (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress lines on stderr (the table still prints)")
    demo.set_defaults(func=_demo)
    models = sub.add_parser("models", help="list the pretrained models shipped in the package",
                            description="List the pretrained models with their validation PSNR and certified bound.")
    models.set_defaults(func=_models)

    from .dataset import add_parser as add_dataset_parser  # noqa: PLC0415 (keeps `invstable --help` light)

    add_dataset_parser(sub)
    from .train import add_parser as add_train_parser  # noqa: PLC0415

    add_train_parser(sub)
    from .reconstruct import add_parser as add_reconstruct_parser  # noqa: PLC0415

    add_reconstruct_parser(sub)
    from .benchmark import add_parser as add_benchmark_parser  # noqa: PLC0415

    add_benchmark_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from ..data import DatasetFileError  # noqa: PLC0415
    from ..models import ModelFileError  # noqa: PLC0415

    try:
        return int(args.func(args) or 0)
    except (ModelFileError, DatasetFileError, OSError, ValueError, TypeError, KeyError) as err:
        # one clear line for the user's mistakes and the machine's limits (a missing or existing file, a full
        # disk, a refused allocation); real bugs (other exceptions) keep their traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"invstable {args.command}: error: {message}", file=sys.stderr)
        return 2
    except MemoryError as err:  # an allocation no estimate foresaw: say so in one line, with numpy's figure
        print(f"invstable {args.command}: error: not enough memory ({err or 'no detail'}); use smaller inputs",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
