"""``python -m mapper predict``: one tile's probabilities from a MiSo checkpoint (stage 7)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config, positive_int
from mapper.tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict one tile: crops on the global lattice, batched through MiSo, blended",
        description=(
            "Predict one tile of a region: crops on the crop lattice shared by every tile, run "
            "through the model in batches, Gaussian-weighted and blended (probabilities). Writes a "
            "float32 GeoTIFF of class probabilities (NaN nodata) at prediction.out_res."
        ),
    )
    p.add_argument("stacks", nargs="+", help="the tile's stack and its neighbours' (<tile>.tif)")
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--tile", required=True, help="tile id, e.g. R0012C0034")
    p.add_argument("--model", required=True, help="checkpoint of the task (training output)")
    p.add_argument("--out", required=True, help="output GeoTIFF")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="crops per model call (default: mapper.blending.BATCH_SIZE)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's, all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from mapper.blending import BATCH_SIZE
    from mapper.config import load_run_region
    from mapper.predict import PredictOptions, predict_tile

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    region = load_run_region(args.config, args.region)
    options = PredictOptions(batch_size=args.batch_size or BATCH_SIZE, device=args.device,
                             progress=not args.no_progress)
    stats = predict_tile(region, args.task, args.tile, args.model, args.stacks, args.out,
                         options=options)
    rate = stats.cells / stats.total if stats.total else float("inf")
    print(f"{args.out}: {stats.crops} crops, {stats.valid_cells}/{stats.cells} valid cells, "
          f"{stats.total:.1f} s ({rate:,.0f} cells/s)")
    return 0
