"""Where the time of a MiSo training or CV job goes, on this CPU, with a region's settings.

Prints, for the region's training settings (default: the demo region, built by the workflow up
to its samples and folds tables):

- the crops per epoch a fine-tuning run plans (labelled and random) and their labelled queries,
- time to read and normalise one crop through the StackReader, cold (first touch of the stack
  blocks: decompression) and warm,
- time per optimiser step (forward, loss, backward, AdamW) of the region's model
  (:func:`mapper.train.model_config`) at the region's batch size, crop size, query count and loss
  terms (``training.geo_alignment``), and the implied seconds per epoch,
- time per test point of the point prediction used by cross-validation,
- wall time of importing torch and the model code (paid by every job).

    python benchmarks/bench_training.py [--config config/config.yaml] [--region demo] [--steps 8]
"""

from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import fitted_normaliser
from cli_errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--region", default="demo")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mapper.train"], check=True)
    print(f"import torch + mapper.train (fresh process): {time.perf_counter() - start:.2f} s")

    import torch

    from mapper.config import load_config, load_region
    from mapper.dataset import CropDataset, CropSettings, predict_points
    from mapper.folds import samples_with_folds
    from mapper.losses import task_loss
    from mapper.models.miso import MiSo
    from mapper.splits import train_test_indices
    from mapper.train import _points, model_config
    from mapper.windows import StackReader, stacks_by_tile

    print(f"torch threads: {torch.get_num_threads()}")
    region = load_region(load_config(args.config), args.region)
    stacks = sorted(glob.glob(f"results/{args.region}/stack/*.tif"))
    samples = f"results/{args.region}/samples/points.parquet"
    folds = f"results/{args.region}/samples/folds.parquet"
    if not Path(folds).is_file():
        sys.exit(f"error: {folds}: not found; make the region's stacks, samples and folds "
                 f"first: snakemake --cores 2 {folds}")
    table = samples_with_folds(region, samples, folds)
    settings = CropSettings.from_training(region.settings["training"])
    train, test = train_test_indices(table, "sh1km", 0, "nsp")
    reader = StackReader(stacks_by_tile(stacks), region.lattice)
    ds = CropDataset(reader, None, settings, region.boundary(), "nsp", _points(table, "nsp", train))
    plans = ds.plan_epoch(0, "finetune")
    centred = sum(p.centred for p in plans)
    print(f"fine-tuning epoch (SH-1km fold 0, {len(train)} NSP points): {len(plans)} crops "
          f"({centred} centred on points, {len(plans) - centred} random), "
          f"{sum(len(p.points) for p in plans)} labelled queries, "
          f"{int(np.ceil(len(plans) / settings.batch_size))} steps of {settings.batch_size}")

    t0 = time.perf_counter()
    pixels = [ds.read(p) for p in plans]
    cold = (time.perf_counter() - t0) / len(plans)
    t0 = time.perf_counter()
    pixels = [ds.read(p) for p in plans[:200]]
    warm = (time.perf_counter() - t0) / len(pixels)
    cfg = model_config(region)
    norm = fitted_normaliser(np.stack(pixels[:64]), cfg)
    ds.normaliser = norm
    t0 = time.perf_counter()
    for px in pixels[:200]:
        norm(px)
    normalise = (time.perf_counter() - t0) / len(pixels)
    print(f"read one {settings.crop_px} px crop: cold {cold * 1e3:.1f} ms, warm {warm * 1e3:.1f} "
          f"ms; normalise {normalise * 1e3:.2f} ms")

    model = MiSo(cfg, 1)
    geo_alignment = bool(region.settings["training"]["geo_alignment"])  # as mapper.train's loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    rng = np.random.default_rng(0)
    batch = ds.make_batch(plans[: settings.batch_size], rng)
    times = []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        out = model(batch.s2, batch.cov, batch.coords, batch.xy)
        loss, _ = task_loss("nsp", out, batch.target, batch.mask, batch.valid,
                            geo_alignment=geo_alignment)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    n_steps = int(np.ceil(len(plans) / settings.batch_size))
    print(f"optimiser step ({settings.batch_size} crops x {batch.coords.shape[1]} queries, "
          f"geo alignment {str(geo_alignment).lower()}): "
          f"{step:.3f} s -> {step * n_steps:.1f} s per epoch (+ reading)")

    xy = table[["x", "y"]].to_numpy()[test][:128]
    t0 = time.perf_counter()
    predict_points(model, norm, reader, xy, settings.crop_px, batch_size=32)
    per_point = (time.perf_counter() - t0) / len(xy)
    print(f"point prediction: {per_point * 1e3:.1f} ms per test point "
          f"({per_point * len(test):.1f} s for the fold's {len(test)})")
    reader.close()


if __name__ == "__main__":
    run_main(main)
