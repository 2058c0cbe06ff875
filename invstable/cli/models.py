"""The ``invstable models`` command: the pretrained models shipped in the package and what they score."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``models`` command to ``subparsers``."""
    p = subparsers.add_parser("models", help="list the pretrained models shipped in the package",
                              description="List the pretrained models with their validation PSNR and certified "
                                          "bound, and which one load_model(task=...) returns.")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..models import PRETRAINED, format_info, list_models, model_info, recommended

    shipped = list_models()
    for name, what in PRETRAINED.items():
        if name not in shipped:
            print(f"{name:<20} (not in this installation) {what}")
            continue
        # task, operator and geometry, training noise, recipe, validation scores, certified bound
        print(format_info(model_info(name)))
    table = recommended()
    if table:
        print("\nload_model(task=...) returns (chosen on validation data; PSNR on the same validation images):")
        for task, choice in table.items():
            scores = ", ".join(f"{n} {row['validation_psnr']:.2f} dB (bound {row['lipschitz_bound']:.2f})"
                               for n, row in sorted(choice["candidates"].items(),
                                                    key=lambda kv: -kv[1]["validation_psnr"]))
            print(f"  {task:<8} {choice['name']}  [{choice['validation_count']} images: {scores}]")
    return 0
