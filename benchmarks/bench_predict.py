"""Prediction of one demo tile: throughput, where the time goes, memory, and the cost at scale.

Usage::

    python benchmarks/bench_predict.py                # demo stacks/model if present, else synthetic
    python benchmarks/bench_predict.py --threads 2 --batch-size 16
    python benchmarks/bench_predict.py --synthetic    # always a demo-like synthetic setup

Setup: the demo region (``config/regions/demo.yaml``: 512 px tiles, its prediction crop lattice)
and its inner tile R0187C0556 with its 8 neighbours. Stacks are ``results/demo/stack/<tile>.tif``
and the model ``results/demo/models/nsp.pt`` when they exist; otherwise demo-like SYNTHETIC stacks
(19 bands of smooth random fields in physical ranges, a Sentinel-2 cloud gap) are written to a
temporary folder and the demo region's model (:func:`mapper.train.model_config`: its size, pixel
query and aspect encoding) with random weights is saved with a normaliser fitted on them (timing
does not depend on the weights; benchmarks/_common.py builds both).

Figures printed:

1. End to end (``predict_tile`` in a fresh process, as the workflow runs it): pixels per second,
   the share of encoders, decoder, blending and I/O (reading, normalising, writing), peak RSS.
2. The project against a plain implementation in the style of the authors' code, at identical
   crops: there each window is encoded alone and every one of its pixel centres decoded in one call
   through the plain per-neighbour MLPs (``set_decoder("plain")``), weighted by a Gaussian from
   ``scipy.signal.windows.gaussian`` (tapered and cut to the support as the project's weights)
   and accumulated window by window. Both times, the speed-up
   and the maximum difference of the outputs.
3. Cost per km^2 with the demo model on this CPU: the project's default crops (256 px, stride
   128: 4 decodes per pixel) against the authors' README setting (250 px windows, 50 px stride: 25
   decodes per pixel; windows resized to 256 as the authors do), from measured time per window and
   window counts per km^2.
4. Projected model time for Alaska at 10 m with the reference size (swinv2_b, as alaska.yaml
   defines the model): FLOPs per pixel counted with torch's FlopCounterMode on one 256 px crop and
   a sample of queries (the encoders counted with each aspect encoding), achieved FLOP/s measured
   on this CPU on the same work; assumptions printed with the figures.
5. Peak memory of one tile job against how much of the region is around it: the same tile
   predicted in a one-tile region (no neighbour stacks) and with its 8 neighbours.
6. The prediction modes (``prediction.precision`` and ``min_weight``) at the reference size, end
   to end through the tile path, against the exact float32 path in the same run: time per km^2,
   probability and stored-count differences, achieved FLOP/s against the same precision's GEMM
   rate (benchmarks/reference_modes.py says how; a fixed subset of the queries is decoded).
7. Peak memory of a predict job at a 4096 px tile with the reference model and 7 classes, in the
   statewide region's prediction mode (``alaska.yaml``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import (  # noqa: E402
    project_region,
    random_checkpoint,
    region_model_config,
    synthetic_stacks,
)
from cli_errors import run_main  # noqa: E402

TILE = "R0187C0556"
STATE_PIXELS = 1.7e10
SECTIONS = ["e2e", "authors", "km2", "state", "memory", "modes", "memory4096"]
"""The figures 1 to 7 of the module's docstring, as --skip and --only name them."""


# -- setup ----------------------------------------------------------------------------------------


def solo_config(folder: Path, lattice) -> Path:  # noqa: ANN001
    """A config with region ``solo``: the demo settings on a boundary of TILE alone."""
    import yaml

    demo = yaml.safe_load((ROOT / "config/regions/demo.yaml").read_text())
    left, bottom, right, top = lattice.tile_bounds(TILE)
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    (folder / "solo.geojson").write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    demo["boundary"] = str(folder / "solo.geojson")
    (folder / "solo.yaml").write_text(yaml.safe_dump(demo))
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["regions"] = {"demo": str(ROOT / "config/regions/demo.yaml"),
                         "solo": str(folder / "solo.yaml")}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# -- 1 and 5: a tile job in a fresh process -------------------------------------------------------


def own_peak_rss_mb() -> float:
    """High-water resident set of this process's memory image (VmHWM; reset at exec, unlike
    getrusage's ru_maxrss, which a child inherits from the process that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """Run predict_tile as the workflow does; print its stats and the peak RSS as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    import mapper.models.checkpoint  # noqa: F401 - loaded before the baseline is taken
    from mapper.config import load_config, load_region
    from mapper.predict import PredictOptions, predict_tile

    region = load_region(load_config(args.config), args.region)
    before = own_peak_rss_mb()
    stats = predict_tile(region, args.task, args.tile, args.model, args.stacks, args.out,
                         options=PredictOptions(batch_size=args.batch_size, progress=False))
    print(json.dumps({
        "seconds": dict(stats.seconds), "crops": stats.crops, "queries": stats.queries,
        "cells": stats.cells, "valid_cells": stats.valid_cells,
        "max_rss_mb": own_peak_rss_mb(),
        "rss_after_imports_mb": before,
    }))


def run_child(config: Path, region: str, model: Path, stacks: list[Path], out: Path,
              args: argparse.Namespace, task: str = "nsp", tile: str = TILE) -> dict:
    cmd = [sys.executable, __file__, "--child", "--config", str(config), "--region", region,
           "--task", task, "--tile", tile,
           "--model", str(model), "--out", str(out), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--stacks", *map(str, stacks)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_end_to_end(r: dict) -> None:
    s = r["seconds"]
    total = s["total"] + s.get("write", 0.0)
    io = s.get("read_mask", 0) + s.get("wait_read", 0) + s.get("write", 0) + s.get("to_device", 0)
    print(f"  tile {TILE}: {r['cells']:,} px ({r['valid_cells']:,} valid), {r['crops']} crops, "
          f"{r['queries']:,} decoded queries ({r['queries'] / max(1, r['valid_cells']):.2f} "
          "per valid px)")
    print(f"  end to end {total:.1f} s -> {r['cells'] / total:,.0f} px/s; peak RSS "
          f"{r['max_rss_mb']:.0f} MB ({r['max_rss_mb'] - r['rss_after_imports_mb']:.0f} MB above "
          "the process with torch, GDAL and mapper imported)")
    for name, key in [("encoders", "encode"), ("decoder", "decode"), ("blending", "blend")]:
        print(f"    {name:10s} {s.get(key, 0):7.2f} s  {100 * s.get(key, 0) / total:5.1f} %")
    print(f"    {'I/O (main)':10s} {io:7.2f} s  {100 * io / total:5.1f} %   (mask read "
          f"{s.get('read_mask', 0):.1f}, waiting for reads {s.get('wait_read', 0):.1f}, write "
          f"{s.get('write', 0):.1f}, batch assembly {s.get('to_device', 0):.1f})")
    print(f"    reader thread (overlapped): read {s.get('read', 0):.1f} s, normalise "
          f"{s.get('normalise', 0):.1f} s")


# -- 2: the authors' style at identical crops -----------------------------------------------------


def authors_style(model, normaliser, lattice, crops, plan, tile, reader):  # noqa: ANN001, ANN201
    """Every window alone: encode, decode all its pixel centres (plain MLPs, one call), weight
    with scipy's Gaussian less its value at the support's edge (zero outside the support),
    accumulate the part inside the tile; mask nodata at the end."""
    import torch
    from rasterio.windows import Window
    from scipy.signal.windows import gaussian

    p = crops.crop_px
    sigma, support = crops.sigma_scale * p, crops.support
    g = gaussian(p, std=sigma) - math.exp(-((support / 2) ** 2) / (2 * sigma**2))
    m = (p - support) // 2
    g[:m], g[m + support:] = 0.0, 0.0  # only the crop's central support answers
    weight = np.outer(g, g)
    t = -1.0 + (2 * np.arange(p) + 1) / p
    yy, xx = np.meshgrid(t, t, indexing="ij")
    coords = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], -1)[None].astype(np.float32))
    tw = lattice.tile_window(tile)
    size = lattice.tile_px
    num = np.zeros((size, size))
    den = np.zeros((size, size))
    model.set_decoder("plain")
    try:
        with torch.inference_mode():
            for _, row in plan:
                for crop in row:
                    r0, c0 = crop.rows.start, crop.cols.start
                    s2, cov = normaliser(reader.read(Window(c0, r0, p, p))[None])
                    feats = model.encode(torch.from_numpy(s2), torch.from_numpy(cov))
                    xy = coords  # the geo branch does not predict; any values
                    logits = model.predict(feats, coords, xy, chunk=p * p)
                    prob = torch.sigmoid(logits)[0, :, 0].numpy().reshape(p, p)
                    a0, a1 = max(r0, int(tw.row_off)), min(r0 + p, int(tw.row_off) + size)
                    b0, b1 = max(c0, int(tw.col_off)), min(c0 + p, int(tw.col_off) + size)
                    src = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
                    dst = (slice(a0 - int(tw.row_off), a1 - int(tw.row_off)),
                           slice(b0 - int(tw.col_off), b1 - int(tw.col_off)))
                    num[dst] += weight[src] * prob[src]
                    den[dst] += weight[src]
    finally:
        model.set_decoder("fast")
    valid = normaliser.valid(reader.read(tw))
    out = np.where(valid & (den > 0), num / np.where(den > 0, den, 1), np.nan)
    return out.astype(np.float32)


def compare_with_authors(model_path: Path, stacks: dict[str, Path], lattice, crops,  # noqa: ANN001
                         args: argparse.Namespace) -> None:
    import torch

    from mapper.models.checkpoint import load_checkpoint
    from mapper.normalise import Normaliser
    from mapper.predictor import TilePredictor
    from mapper.windows import StackReader

    model, meta = load_checkpoint(model_path)
    norm = Normaliser.from_dict(meta.normalisation)
    predictor = TilePredictor(model, norm, lattice, crops, "nsp", batch_size=args.batch_size,
                              progress=False, device="cpu")
    times_p, times_a = [], []
    with StackReader(stacks, lattice) as reader:
        valid = predictor.valid_cells(reader, TILE)
        plan = predictor._plan(TILE, valid)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ours, _ = predictor.predict(reader, TILE)
            times_p.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = authors_style(model, norm, lattice, crops, plan, TILE, reader)
            times_a.append(time.perf_counter() - t0)
    n_crops = sum(len(r) for _, r in plan)
    diff = float(np.nanmax(np.abs(ours[0] - theirs)))
    same_mask = bool(np.array_equal(np.isnan(ours[0]), np.isnan(theirs)))
    tp, ta = min(times_p), min(times_a)
    print(f"  identical crops: {n_crops} windows of {crops.crop_px} px at stride "
          f"{crops.stride_px} (torch threads {torch.get_num_threads()}, best of {args.repeats})")
    print(f"  project (batched encode, fast decoder, valid in-tile cells only): {tp:7.1f} s")
    print(f"  authors' style (window by window, plain decoder, every pixel):      {ta:7.1f} s")
    print(f"  speed-up {ta / tp:.2f}x; max |difference| {diff:.2e}; same nodata mask: {same_mask}")


# -- 3: cost per km^2 -----------------------------------------------------------------------------


def time_per_window(model, crop_px: int, n_out_px: int, batch: int, project: bool,  # noqa: ANN001
                    repeats: int) -> float:
    """Seconds per window: encode (batched or alone) + decode n_out_px pixel centres."""
    import torch

    from mapper.predictor import points_per_call

    side = int(round(math.sqrt(n_out_px)))
    t = -1.0 + (2 * np.arange(side) + 1) / side  # n_out_px centres spread over the crop
    yy, xx = np.meshgrid(t, t, indexing="ij")
    b = batch if project else 1
    coords = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], -1)[None].astype(np.float32))
    coords = coords.repeat(b, 1, 1)
    s2 = torch.rand(b, 9, crop_px, crop_px)
    cov = torch.rand(b, model.cfg.n_cov_bands, crop_px, crop_px)
    model.set_decoder("fast" if project else "plain")
    chunk = max(1, points_per_call(model.cfg.emb_dim) // b) if project else side * side
    best = math.inf
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                t0 = time.perf_counter()
                feats = model.encode(s2, cov)
                model.predict(feats, coords, coords, chunk=chunk)
                best = min(best, (time.perf_counter() - t0) / b)
    finally:
        model.set_decoder("fast")
    return best


def cost_per_km2(region, args: argparse.Namespace) -> None:  # noqa: ANN001
    """Figure 3 with the region's model (its size, pixel query and aspect), random weights."""
    import torch

    from mapper.models.miso import MiSo

    torch.manual_seed(0)
    model = MiSo(region_model_config(region), n_out=1).eval()
    px_per_km2 = 1e6 / (10.0 * 10.0)
    ours = time_per_window(model, 256, 256 * 256, 4, True, args.repeats)
    theirs = time_per_window(model, 256, 250 * 250, 1, False, args.repeats)
    w_ours, w_theirs = px_per_km2 / 128**2, px_per_km2 / 50**2
    print(f"  region {region.name}'s model ({model.cfg.name}, {model.cfg.n_cov_bands} "
          "covariates) on this CPU; time per window measured, windows per km^2 counted")
    print(f"  project default, 256 px crops at stride 128 (4 decodes/px): {ours:6.2f} s/window x "
          f"{w_ours:.2f} windows/km^2 = {ours * w_ours:6.2f} s/km^2")
    print(f"  authors' README, 250 px windows at stride 50 (25 decodes/px): {theirs:6.2f} s/window "
          f"x {w_theirs:.2f} windows/km^2 = {theirs * w_theirs:6.2f} s/km^2")
    print(f"  ratio {theirs * w_theirs / (ours * w_ours):.1f}x; for the state's ~1.7e6 km^2 on one "
          f"such CPU: {ours * w_ours * 1.7e6 / 86400:,.0f} vs "
          f"{theirs * w_theirs * 1.7e6 / 86400:,.0f} CPU-days (demo model)")


# -- 4: the state at the reference size -----------------------------------------------------------


def state_projection(args: argparse.Namespace) -> None:
    import torch
    from reference_modes import reference_model_config
    from torch.utils.flop_counter import FlopCounterMode

    from mapper.bands import ASPECT_ENCODINGS
    from mapper.models.flops import decoder_flops
    from mapper.models.miso import MiSo

    crop, stride, n_q = 256, 128, args.queries
    coords = torch.rand(1, n_q, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def counted_encode(cfg):  # noqa: ANN001, ANN202
        """A random-weight model of ``cfg``, its inputs, features and encoder FLOPs on one crop."""
        torch.manual_seed(0)
        model = MiSo(cfg, n_out=1).eval()
        s2, cov = torch.rand(1, 9, crop, crop), torch.rand(1, cfg.n_cov_bands, crop, crop)
        counter = FlopCounterMode(display=False)
        with counter:
            feats = model.encode(s2, cov)
        return model, s2, cov, feats, counter.get_total_flops()

    cfg = reference_model_config()
    alaska = cfg.aspect
    with torch.inference_mode():  # the encoders with each aspect encoding, alaska.yaml's last
        enc_by_aspect = {}
        for other in (cfg.with_aspect(a) for a in ASPECT_ENCODINGS if a != alaska):
            enc_by_aspect[other.aspect] = (other.n_cov_bands, counted_encode(other)[-1])
        model, s2, cov, feats, enc_flops = counted_encode(cfg)
        enc_by_aspect[alaska] = (cfg.n_cov_bands, enc_flops)
        per_query, per_call = {}, {}
        for decoder in ("fast", "plain"):
            model.set_decoder(decoder)
            flops = []
            for n in (n_q // 2, n_q):  # the slope is per query, the rest is per call (per crop)
                counter = FlopCounterMode(display=False)
                with counter:
                    model.predict(feats, coords[:, :n], coords[:, :n], chunk=512)
                flops.append(counter.get_total_flops())
            per_query[decoder] = (flops[1] - flops[0]) / (n_q - n_q // 2)
            per_call[decoder] = flops[1] - per_query[decoder] * n_q
            if decoder == "fast":
                dec_flops = flops[1]
        model.set_decoder("fast")
        model.encode(s2, cov)  # warm-up
        t0 = time.perf_counter()
        model.encode(s2, cov)
        t_enc = time.perf_counter() - t0
        model.predict(feats, coords[:, :64], coords[:, :64], chunk=512)  # warm-up
        t0 = time.perf_counter()
        model.predict(feats, coords, coords, chunk=512)
        t_dec = time.perf_counter() - t0
    analytic = decoder_flops(cfg, 1, "fast", crop)
    fast_q = per_query["fast"]
    achieved = (enc_flops + dec_flops) / (t_enc + t_dec)
    decodes = (crop / stride) ** 2
    per_crop = enc_flops + per_call["fast"]  # encoders + the fast decoder's cell projections
    per_px = decodes * fast_q + per_crop / stride**2
    per_px_authors = 25 * per_query["plain"] + (enc_flops + per_call["plain"]) / 50**2
    total = STATE_PIXELS * per_px
    print("  encoders by aspect encoding (counted, 256 px crop): " + "; ".join(
        f"{a} ({n} covariates{', alaska.yaml' if a == alaska else ''}) {f / 1e9:,.3f} GFLOP"
        for a, (n, f) in enc_by_aspect.items()))
    print(f"  {cfg.name} (aspect as {alaska}), 256 px crop (counted): encoders "
          f"{enc_flops / 1e9:.0f} GFLOP/crop; fast decoder {fast_q / 1e6:.1f} MFLOP/query "
          f"(analytic {analytic.per_query / 1e6:.1f}) + "
          f"{per_call['fast'] / 1e9:.1f} GFLOP/crop (analytic "
          f"{(analytic.per_crop + analytic.per_call) / 1e9:.1f}); plain "
          f"{per_query['plain'] / 1e6:.1f} MFLOP/query")
    print(f"  FLOPs per pixel at the default stride 128 ({decodes:.0f} decodes/px): "
          f"{per_px / 1e6:.0f} MFLOP (decoder queries {decodes * fast_q / per_px * 100:.0f} %); "
          f"authors' setting (250/50, plain, 25 decodes/px): {per_px_authors / 1e6:.0f} MFLOP")
    print(f"  measured here: encode {t_enc:.2f} s/crop, {n_q} queries {t_dec:.2f} s -> achieved "
          f"{achieved / 1e9:.1f} GFLOP/s (float32, {torch.get_num_threads()} threads)")
    print(f"  assumptions: {STATE_PIXELS:.1e} land pixels at 10 m, every pixel decoded "
          f"{decodes:.0f} times, no ocean/cloud skipping, I/O overlapped")
    print(f"  state total {total / 1e18:.1f} EFLOP -> {total / achieved / 86400 / 365:,.0f} years "
          f"on this CPU at the measured rate")
    for name, rate in [("one GPU at an assumed 100 TFLOP/s achieved (bf16, ~30% of an A100's "
                        "peak)", 1e14), ("one GPU at an assumed 30 TFLOP/s achieved", 3e13)]:
        print(f"  {name}: {total / rate / 3600:,.1f} GPU-hours (authors' setting "
              f"{STATE_PIXELS * per_px_authors / rate / 3600:,.0f})")


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="repeats of timed comparisons")
    parser.add_argument("--queries", type=int, default=512, help="swinv2_b queries timed")
    parser.add_argument("--synthetic", action="store_true", help="always synthesize the setup")
    parser.add_argument("--every", type=int, default=4,
                        help="6: decode every n-th row and column of the reference tile")
    parser.add_argument("--ref-batch", type=int, default=4, help="6: crops per encoder call")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    parser.add_argument("--only", nargs="*", default=None, choices=SECTIONS,
                        help="run only these sections")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--region", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="nsp", help=argparse.SUPPRESS)
    parser.add_argument("--tile", default=TILE, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--stacks", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.child:
        child(args)
        return
    if args.only is not None:
        args.skip = [s for s in SECTIONS if s not in args.only]

    import torch

    torch.set_num_threads(args.threads)
    from mapper.blending import CropLattice

    region = project_region("demo")
    lattice = region.lattice
    crops = CropLattice.from_settings(region.settings["prediction"], lattice.res)
    tiles = [TILE, *lattice.neighbours(TILE)]
    with tempfile.TemporaryDirectory(prefix="bench_predict.") as tmp:
        folder = Path(tmp)
        found = {t: ROOT / f"results/demo/stack/{t}.tif" for t in tiles}
        model_path = ROOT / "results/demo/models/nsp.pt"
        if not args.synthetic and all(p.exists() for p in found.values()):
            stacks = found
            print(f"stacks: results/demo/stack ({len(stacks)} tiles)")
        else:
            stacks = synthetic_stacks(folder, lattice, tiles)
            print(f"stacks: demo-like SYNTHETIC, {len(stacks)} tiles of {lattice.tile_px} px")
        if args.synthetic or not model_path.exists():
            model_path = random_checkpoint(folder / "nsp.pt", region, "nsp", stacks, TILE)
            print("model: the demo region's (its size, pixel query and aspect), random weights, "
                  "normaliser fitted on the stacks")
        else:
            print(f"model: {model_path.relative_to(ROOT)}")
        config = solo_config(folder, lattice)
        print(f"demo prediction settings: {region.settings['prediction']}; batch "
              f"{args.batch_size}; torch threads {args.threads}; CPU")

        if "e2e" not in args.skip or "memory" not in args.skip:
            print("\n1. end to end, one tile job (fresh process, 8 neighbour stacks)")
            full = run_child(config, "demo", model_path, list(stacks.values()),
                             folder / "full.tif", args)
            report_end_to_end(full)
        if "authors" not in args.skip:
            print("\n2. project vs the authors' style, same tile, same crops, same model")
            compare_with_authors(model_path, stacks, lattice, crops, args)
        if "km2" not in args.skip:
            print("\n3. cost per km^2: project default stride vs the authors' README setting")
            cost_per_km2(region, args)
        if "state" not in args.skip:
            print("\n4. projected model time for the state at 10 m, reference size swinv2_b")
            state_projection(args)
        if "memory" not in args.skip:
            print("\n5. peak memory of one tile job vs region around it")
            solo = run_child(config, "solo", model_path, [stacks[TILE]], folder / "solo.tif", args)
            for name, r in [("tile alone (one-tile region, no neighbour stacks)", solo),
                            ("tile with its 8 neighbours (16-tile region)      ", full)]:
                print(f"  {name}: peak RSS {r['max_rss_mb']:.0f} MB, job's own "
                      f"{r['max_rss_mb'] - r['rss_after_imports_mb']:.0f} MB, {r['crops']} crops")
            print(f"  growth {full['max_rss_mb'] - solo['max_rss_mb']:+.0f} MB for 8x the stacks "
                  "(the job reads one crop row at a time; accumulators are tile-sized)")
        if "modes" not in args.skip or "memory4096" not in args.skip:
            import reference_modes
        if "modes" not in args.skip:
            print("\n6. prediction modes at the reference size (swinv2_b, 7 classes), through "
                  "the tile path")
            reference_modes.run_modes(folder, args)
        if "memory4096" not in args.skip:
            print("\n7. peak memory of a predict job at a 4096 px tile, reference model, 7 "
                  "classes")
            statewide = project_region("alaska")
            mode = statewide.settings["prediction"]
            reference_modes.memory_at_4096(folder, args, mode["precision"], mode["min_weight"])


if __name__ == "__main__":
    run_main(main, from_root=False)
