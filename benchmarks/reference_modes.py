"""Prediction modes at the reference size, end to end through the tile path (bench_predict.py 6-7).

Setup (every input SYNTHETIC): the reference model (``swinv2_b``: Swin-V2-B encoders, 1024-wide
embeddings, random weights, 7 classes as soil order; its last layer scaled so that the logits
have a standard deviation of 2, as a trained model's, not the ~0.1 of random weights that would
put every probability near 1/7 and hide the differences; the aspect taken as ``alaska.yaml``'s
``model.aspect`` gives it), the statewide prediction settings of
``config/regions/alaska.yaml`` (256 px crops, stride 128, sigma 0.125) and smooth random stacks
around one 512 px tile. Each mode runs :class:`mapper.predictor.TilePredictor` on that tile as the
workflow does (crop plan, reads, normalisation, encoders, packed decoding, blending, negligible
weights), except that only every ``--every``-th row and column of cells is decoded (a fixed
1/16 of the tile by default): a whole 256 px crop takes about half a minute of decoding per mode
on 2 CPU cores. The encoders run on every crop.

Figures per mode, against the exact float32 path:

- time per km^2, projected from the measured rates: encoder seconds per crop x crops per km^2
  (1e4 / stride^2) + decoder seconds per query x queries per km^2 (1e4 x the mode's measured
  decodes per cell), and the speed-up over the exact path;
- the largest probability difference and the share of stored map counts (percent 0..100, as
  the mosaic rounds them) that differ at all and by more than 1, over the decoded cells;
- achieved FLOP/s of the decoder (counted FLOPs per query, :mod:`mapper.models.flops`) against
  the GEMM rate of the same precision measured in the same run (torch.mm, 2048^2 and a
  decoder-shaped 16384 x 1024 x 1024).

Then the peak memory of one predict job at a 4096 px tile with the reference model and 7
classes, measured in a fresh process by ``predict_tile`` on a region whose mapped area is a
128 px square in the middle of one 4096 px tile: every tile-sized array (mask, accumulators,
output) is allocated as for a full tile, while only the crops over the square run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODES = [("float32", 0.0), ("float32", 0.01), ("float32", 0.02), ("bfloat16", 0.0),
         ("bfloat16", 0.01), ("bfloat16", 0.02)]
REF_TILE_PX = 512
LOGIT_STD = 2.0
"""The random model's logits are scaled to this spread (a trained model's are of this order)."""
MEMORY_TILE_PX = 4096
MEMORY_PATCH_PX = 128


def reference_prediction() -> dict:
    """The statewide prediction settings (alaska.yaml, validated), precision and min_weight
    left out."""
    from _common import project_region

    settings = project_region("alaska").settings["prediction"]
    return {k: v for k, v in settings.items() if k not in ("precision", "min_weight")}


def reference_model_config():  # noqa: ANN201
    """The statewide model as alaska.yaml defines it (:func:`mapper.train.model_config`: its size,
    pixel query and aspect encoding), for a model of random weights."""
    from _common import project_region, region_model_config

    return region_model_config(project_region("alaska"))


def reference_checkpoint(folder: Path, stacks: dict, lattice, tile: str) -> Path:  # noqa: ANN001
    """A swinv2_b soil-order checkpoint of alaska.yaml's model with random weights, its logits
    spread like a trained model's (:data:`LOGIT_STD`), normaliser fitted on the stacks."""
    from _common import project_region, random_checkpoint

    return random_checkpoint(folder / "soilorder_swinv2_b.pt", project_region("alaska"),
                             "soilorder", stacks, tile, logit_std=LOGIT_STD, lattice=lattice)


def gemm_rates(repeats: int = 3) -> dict[str, dict[str, float]]:
    """GFLOP/s of torch.mm per precision: a 2048^2 square and a decoder-shaped product."""
    import torch

    out: dict[str, dict[str, float]] = {}
    for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]:
        out[name] = {}
        for shape in [(2048, 2048, 2048), (16384, 1024, 1024)]:
            m, k, n = shape
            a, b = torch.rand(m, k, dtype=dtype), torch.rand(k, n, dtype=dtype)
            torch.mm(a, b)
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - t0)
            out[name]["x".join(map(str, shape))] = 2 * m * k * n / best / 1e9
    return out


def run_modes(folder: Path, args: argparse.Namespace) -> None:
    import torch

    from mapper.blending import CropLattice
    from mapper.grid import Lattice
    from mapper.models.checkpoint import load_checkpoint
    from mapper.models.flops import decoder_flops
    from mapper.normalise import Normaliser
    from mapper.predictor import TilePredictor
    from mapper.products.mosaic import to_percent
    from mapper.windows import StackReader

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import synthetic_stacks
    from bench_predict import TILE

    lattice = Lattice(-2600000.0, 2600000.0, 10.0, REF_TILE_PX)
    settings = reference_prediction()
    crops = CropLattice.from_settings(settings, lattice.res)
    tile = TILE  # the demo's inner tile: the demo lattice has 512 px tiles too
    tiles = [tile, *lattice.neighbours(tile)]
    stacks = synthetic_stacks(folder, lattice, tiles)
    model_path = reference_checkpoint(folder, stacks, lattice, tile)
    model, meta = load_checkpoint(model_path)
    norm = Normaliser.from_dict(meta.normalisation)
    every = args.every

    class Subset(TilePredictor):
        """Decodes only cells on every ``every``-th global row and column."""

        def valid_cells(self, reader, tile):  # noqa: ANN001, ANN202
            ok = super().valid_cells(reader, tile)
            ow = self.out_window(tile)
            rows = (np.arange(int(ow.row_off), int(ow.row_off + ow.height)) % every) == 0
            cols = (np.arange(int(ow.col_off), int(ow.col_off + ow.width)) % every) == 0
            return ok & np.outer(rows, cols)

    rates = gemm_rates()
    flops = decoder_flops(model.cfg, 7, "fast", crops.crop_px)
    print(f"  swinv2_b, 7 classes, random weights; crops {crops.describe()}; tile "
          f"{REF_TILE_PX} px, decoding every {every}th row and column (1/{every * every} of "
          f"the cells); torch threads {torch.get_num_threads()}")
    print("  GEMM rate measured now: " + "; ".join(
        f"{p} " + ", ".join(f"{s} {r:.0f}" for s, r in v.items()) + " GFLOP/s"
        for p, v in rates.items()))
    results = {}
    with StackReader(stacks, lattice) as reader:
        for precision, eps in MODES:
            predictor = Subset(model, norm, lattice, crops, "soilorder", batch_size=args.ref_batch,
                               precision=precision, min_weight=eps, progress=False,
                               device="cpu")
            out, stats = predictor.predict(reader, tile)
            results[(precision, eps)] = (out, stats)
            s = stats.seconds
            print(f"    {precision:8s} eps {eps:<5g} {stats.crops} crops, {stats.queries:,} "
                  f"queries: encode {s['encode']:.1f} s, decode {s['decode']:.1f} s, "
                  f"total {s['total']:.1f} s", flush=True)
    exact, exact_stats = results[("float32", 0.0)]
    valid = np.isfinite(exact[0])
    cells = int(valid.sum())
    px_km2 = 1e6 / lattice.res**2
    crops_km2 = px_km2 / crops.stride_px**2

    def per_km2(stats) -> tuple[float, float]:  # noqa: ANN001
        enc = stats.seconds["encode"] / stats.crops
        dec = stats.seconds["decode"] / stats.queries
        decodes = stats.queries / cells
        return enc * crops_km2 + dec * decodes * px_km2, decodes

    base, _ = per_km2(exact_stats)
    exact_counts = to_percent(exact)
    print(f"  {'mode':22s} {'s/km^2':>7s} {'speed-up':>8s} {'decodes/px':>10s} "
          f"{'max |dp|':>8s} {'counts !=':>9s} {'px <= 1':>8s} {'class !=':>8s} "
          f"{'GFLOP/s':>7s} {'of GEMM':>7s}")
    passing = []
    for (precision, eps), (out, stats) in results.items():
        t, decodes = per_km2(stats)
        dc = np.abs(to_percent(out)[:, valid].astype(int)
                    - exact_counts[:, valid].astype(int))  # [classes, cells]
        within = float(np.mean(dc.max(axis=0) <= 1))  # pixels whose every count moves <= 1
        classes_differ = float(np.mean(np.argmax(out[:, valid], 0)
                                       != np.argmax(exact[:, valid], 0)))
        achieved = flops.per_query * stats.queries / stats.seconds["decode"] / 1e9
        gemm = rates[precision]["16384x1024x1024"]
        if within >= 0.995:
            passing.append((base / t, precision, eps))
        print(f"  {precision + ' eps ' + format(eps, 'g'):22s} {t:7.1f} {base / t:7.2f}x "
              f"{decodes:10.2f} {np.nanmax(np.abs(out - exact)):8.4f} "
              f"{100 * np.mean(dc > 0):8.2f}% {100 * within:7.2f}% "
              f"{100 * classes_differ:7.3f}% {achieved:7.0f} {100 * achieved / gemm:6.0f}%")
    print(f"  over {cells:,} decoded cells x {exact.shape[0]} class probabilities as stored "
          "(percent 0..100, as the mosaic rounds them): 'counts !=' the share of counts that "
          "differ from the exact path's, 'px <= 1' the share of pixels whose every count "
          "differs by at most 1, 'class !=' pixels whose most probable class differs")
    print("  GFLOP/s: the decoder's counted FLOPs per query (mapper.models.flops) x queries / "
          "decode seconds, against torch.mm's rate of the mode's precision measured above "
          "(16384 x 1024 x 1024); in bfloat16 mode the mappers and head still run in float32")
    if passing:
        speed, precision, eps = max(passing)
        print(f"  fastest mode with every count within 1 on >= 99.5 % of pixels: {precision} "
              f"eps {eps:g}, {speed:.2f}x the exact path per km^2")
    top = np.max(exact[:, valid], axis=0)
    print(f"  exact map's spread: most probable class at {np.percentile(top, 10):.2f} / "
          f"{np.percentile(top, 50):.2f} / {np.percentile(top, 90):.2f} (10th/50th/90th "
          "percentile)")
    print("  the state (1.7e6 km^2), one task, on this CPU: " + ", ".join(
        f"{p} eps {e:g} {per_km2(st)[0] * 1.7e6 / 86400:,.0f} CPU-days"
        for (p, e), (_, st) in results.items()))


def memory_at_4096(folder: Path, args: argparse.Namespace, precision: str, eps: float) -> None:
    """Peak RSS of one predict job at a 4096 px tile (module docstring), in a fresh process."""
    import yaml

    from mapper.grid import Lattice

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import synthetic_stacks
    from bench_predict import run_child

    lattice = Lattice(-2600000.0, 2600000.0, 10.0, MEMORY_TILE_PX)
    tile = lattice.tile_of_xy(-148_000.0, 1_640_000.0)
    left, _, _, top = lattice.tile_bounds(tile)
    half = MEMORY_TILE_PX * lattice.res / 2
    a, b = half - MEMORY_PATCH_PX * lattice.res / 2, half + MEMORY_PATCH_PX * lattice.res / 2
    ring = [[left + a, top - b], [left + b, top - b], [left + b, top - a], [left + a, top - a],
            [left + a, top - b]]
    (folder / "ref4096.geojson").write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    region = yaml.safe_load((ROOT / "config/regions/demo.yaml").read_text())
    region.update(boundary=str(folder / "ref4096.geojson"), tile_px=MEMORY_TILE_PX,
                  model={"size": "swinv2_b"},
                  prediction={**reference_prediction(), "precision": precision,
                              "min_weight": eps})
    (folder / "ref4096.yaml").write_text(yaml.safe_dump(region))
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["regions"] = {"ref4096": str(folder / "ref4096.yaml")}
    (folder / "ref4096.config.yaml").write_text(yaml.safe_dump(config))
    stacks = synthetic_stacks(folder / "t4096", lattice, [tile])
    model = reference_checkpoint(folder, stacks, lattice, tile)
    r = run_child(folder / "ref4096.config.yaml", "ref4096", model, list(stacks.values()),
                  folder / "ref4096.tif", args, task="soilorder", tile=tile)
    print(f"  {precision} eps {eps:g}, tile {tile} ({MEMORY_TILE_PX} px), 7 classes, swinv2_b: "
          f"peak RSS {r['max_rss_mb']:,.0f} MB ({r['max_rss_mb'] - r['rss_after_imports_mb']:,.0f}"
          f" MB above the imports); {r['crops']} crops over the {MEMORY_PATCH_PX} px square, "
          f"{r['queries']:,} queries, {r['seconds']['total']:.0f} s")
    print("  tile-sized arrays: accumulators 7 x 4096^2 float32 (470 MB) + weights (67 MB), "
          "divided in place into the output")
