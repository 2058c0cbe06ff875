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
