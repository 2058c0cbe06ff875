"""The deepinv peer: what a user would pick instead of invstable (PROTOCOLS.md, "Methods compared").

The peer (deepinv's unrolled PGD with a DnCNN prior, sized and trained like the shipped models) is
:class:`invstable.evaluation.DeepinvPeer`; this script trains it with :func:`invstable.evaluation.train_peer` and
stores its weights in ``benchmarks/results/peer-<task>.safetensors``, where the benchmarks find it.

    python -m benchmarks.peer --task ct-30                 # trains (3 300 steps) and writes the weights
    python -m benchmarks.peer --task blur-g2 --until 1500  # stops at step 1 500 (checkpoint kept)
    python -m benchmarks.peer --task blur-g2 --resume      # continues the same schedule
    python -m benchmarks.peer --task ct-30 --curve-only    # the learning curve of the shipped weights

A complete run also writes its learning curve (``training-peer-<task>.json`` and ``.png`` beside the weights).

The checkpoint (``checkpoints/peer-<task>/checkpoint.pt``, under 1 MB) is rewritten at every validation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._common import RESULTS, ROOT
from invstable.evaluation import PEER_RECIPE, load_peer, peer_weights_path, train_peer
from invstable.training import write_curve


def write_peer_curve(record: dict, folder) -> Path:
    """The peer's validation PSNR against steps and seconds (its training record), as JSON and PNG in ``folder``."""
    task, recipe = record["task"], record["recipe"]
    payload = {"what": f"deepinv peer of {task} (unrolled PGD, {recipe['iterations']} iterations, DnCNN depth "
                       f"{recipe['depth']}, {recipe['features']} features): validation PSNR (first "
                       f"{recipe['validation_count']} validation images) against steps and seconds",
               "device": "cpu", "threads": record.get("threads"), "recipe": recipe,
               "best_step": record["best_step"], "validation_psnr": record["validation_psnr"],
               "curve": record["history"]}
    return write_curve(Path(folder) / f"training-peer-{task}.json", payload,
                       title=f"deepinv peer, {task}: learning curve ({recipe['steps']} steps)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(PEER_RECIPE), help="protocol task")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped models' budget)")
    parser.add_argument("--out", default=None, help="folder of the weights (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--until", type=int, default=None, help="stop after this step (resume later)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file (default checkpoints/peer-<task>/checkpoint.pt)")
    parser.add_argument("--depth", type=int, default=None, help="DnCNN layers (default 5)")
    parser.add_argument("--features", type=int, default=None, help="DnCNN channels (default 16)")
    parser.add_argument("--curve-only", action="store_true",
                        help="only write the learning curve of the weights in --out (no training)")
    args = parser.parse_args(argv)
    out = RESULTS if args.out is None else args.out
    if args.curve_only:
        _, record = load_peer(args.task, peer_weights_path(args.task, out))
        print(f"wrote {write_peer_curve(record, out)}")
        return
    checkpoint = args.checkpoint or ROOT / "checkpoints" / f"peer-{args.task}" / "checkpoint.pt"
    record = train_peer(args.task, steps=args.steps, out=out, threads=args.threads, checkpoint=checkpoint,
                        resume=args.resume, until=args.until, depth=args.depth, features=args.features)
    where = f"written {peer_weights_path(args.task, out)}" if record["complete"] else f"checkpoint {checkpoint}"
    if record["complete"]:
        write_peer_curve(record, out)
    print(f"best validation PSNR {record['validation_psnr']:.2f} dB at step {record['best_step']} "
          f"({record['train_seconds']:.0f} s); {where}")


if __name__ == "__main__":
    main()
