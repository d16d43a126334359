"""Encoders vs implicit decoder on this CPU: FLOPs per query, queries/s, time per crop.

For each model size (demo at 64 px crops, swinv2_t and swinv2_b at 256 px) and each decoder
(plain: the reference's per-neighbour MLPs; fast: the exact restructuring), the model being the
region's (``--region``, default demo: its pixel query and aspect encoding, at that size;
:func:`mapper.train.model_config`), prints:

- analytic FLOPs per query of the prediction path (mapper.models.flops),
- measured queries per second and achieved GFLOP/s, against torch.mm's float32 GFLOP/s measured
  in the same run (the practical peak of this CPU for dense products),
- time per crop of the two encoders, and of the decoder when every pixel centre of the crop is
  queried. For the reference sizes the decoder is timed on a subset of queries and scaled to the
  crop's pixel count (the per-call fast-decoder preparation is timed separately and not scaled).

Weights are random (timing does not depend on them); one crop per call (batch 1).

    python benchmarks/bench_decoder.py [--sizes demo swinv2_t swinv2_b] [--subset 1024]
                                       [--region demo]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from _common import project_region, region_model_config
from cli_errors import run_main

from mapper.config import Region
from mapper.models.flops import decoder_flops
from mapper.models.miso import Features, MiSo

CROP_PX = {"demo": 64, "swinv2_t": 256, "swinv2_b": 256}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 torch.mm GFLOP/s on n x n matrices (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(partial(torch.mm, a, b), repeats) / 1e9


def pixel_centres(crop_px: int) -> torch.Tensor:
    """Every pixel centre of a crop, crop-normalised (x, y): [1, crop_px^2, 2]."""
    t = -1.0 + (2 * torch.arange(crop_px) + 1) / crop_px
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1)[None]


def prepare_both(model: MiSo, feats: Features, decoder: str) -> None:
    """The per-call work of a decoder for both modalities (nothing for plain)."""
    model.sat_query.prepare(feats.sat, decoder)
    model.cov_query.prepare(feats.cov, decoder)


def bench_size(region: Region, name: str, subset: int,
               peak: float) -> list[dict[str, object]]:
    """One row per decoder for the region's model at size ``name``."""
    torch.manual_seed(0)
    cfg = region_model_config(region, name)
    crop = CROP_PX[name]
    model = MiSo(cfg, n_out=1).eval()
    s2, cov = torch.rand(1, 9, crop, crop), torch.rand(1, cfg.n_cov_bands, crop, crop)
    coords = pixel_centres(crop)
    n_full = coords.shape[1]
    n = min(subset, n_full) if name != "demo" else n_full
    sample = coords[:, torch.randperm(n_full)[:n]]
    repeats = 5 if name == "demo" else 2
    rows = []
    with torch.inference_mode():
        t_encode = timed(partial(model.encode, s2, cov), repeats)
        feats = model.encode(s2, cov)
        for decoder in ("plain", "fast"):
            model.set_decoder(decoder)
            t_prepare = timed(partial(prepare_both, model, feats, decoder), repeats)
            t_call = timed(partial(model.predict, feats, sample, chunk=4096), repeats)
            t_query = max(t_call - t_prepare, 1e-9) / n
            flops = decoder_flops(cfg, n_out=1, decoder=decoder, crop_px=crop)
            achieved = flops.per_query / t_query / 1e9
            rows.append({
                "size": name, "crop": crop, "decoder": decoder,
                "mflop_q": flops.per_query / 1e6,
                "qps": 1.0 / t_query,
                "gflops": achieved,
                "pct_peak": 100.0 * achieved / peak,
                "encode_s": t_encode,
                "decode_s": t_prepare + t_query * n_full,
                "timed": "all" if n == n_full else f"{n}/{n_full}",
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["demo", "swinv2_t", "swinv2_b"],
                        choices=sorted(CROP_PX))
    parser.add_argument("--subset", type=int, default=1024,
                        help="queries timed per crop for the reference sizes (then scaled)")
    parser.add_argument("--region", default="demo",
                        help="region of config/config.yaml whose model settings are used")
    args = parser.parse_args()

    region = project_region(args.region)
    m = region.settings["model"]
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"torch.mm float32 2048^3: {peak:.1f} GFLOP/s; region {region.name}'s model settings "
          f"(pixel query {str(m['pixel_query']).lower()}, aspect as {m['aspect']})")
    rows = [row for name in args.sizes for row in bench_size(region, name, args.subset, peak)]

    header = (f"{'size':9} {'crop':>4} {'decoder':7} {'MFLOP/q':>8} {'queries/s':>10} "
              f"{'GFLOP/s':>8} {'%mm':>5} {'enc s/crop':>10} {'dec s/crop':>10} "
              f"{'dec/enc':>7}  timed")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['size']:9} {r['crop']:>4} {r['decoder']:7} {r['mflop_q']:>8.2f} "
              f"{r['qps']:>10.0f} {r['gflops']:>8.1f} {r['pct_peak']:>5.0f} "
              f"{r['encode_s']:>10.3f} {r['decode_s']:>10.2f} "
              f"{r['decode_s'] / r['encode_s']:>7.1f}  {r['timed']}")
    print("enc s/crop: both encoders, one crop; dec s/crop: every pixel centre of the crop "
          "queried once (prediction path, fast includes its per-call preparation); "
          "timed 'k/N': k random pixel centres timed, scaled to N.")


if __name__ == "__main__":
    run_main(main, from_root=False)
