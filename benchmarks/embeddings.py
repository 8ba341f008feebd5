"""Contrastive embeddings: neurodecode against the ``cebra`` package on identical data.

Both implementations are driven by the peer harness ``../shared/bench/bench_cebra.py`` (its
synthetic 3-D place-field data, its contiguous 80/20 split, its KNN decoder), each run in a fresh
process with the same arguments; neurodecode enters through
``--impl neurodecode.models.contrastive:cebra_factory``. Reported per conditional:

* iterations/s over the whole ``fit`` and in the steady state (from the harness's callbacks),
  and their ratio neurodecode / cebra;
* held-out KNN R² of the 3-D position from each embedding (and, once, from PCA and raw data);
* peak memory through ``fit`` (the harness's ``ru_maxrss`` right after ``fit``, in a fresh
  process whose parent is small) and what ``fit`` added to the process after the data were made;
  the process's final VmHWM is also kept, but it is dominated by the harness's brute-force
  cosine KNN (about 1 GB of distance chunks at 100k samples), the same for both;
* step-rate scaling: neurodecode's steady ``time_delta`` rate at 1,000,000 samples against
  100,000 (the positive search is a KD-tree query, so it should barely change).

Usage::

    python benchmarks/embeddings.py --quick --json outputs/bench_embeddings.json

``--quick`` (under 2 min on 2 cores) runs fewer iterations (30 for ``time_delta``, whose cebra
step is slow, and 150 for ``time``; R² after so few steps is a sanity check, not the
500-iteration comparison) on 20,000 samples (the harness's brute-force cosine KNN
takes about a minute per run at 100,000) and skips the PCA/raw KNN baselines; the scaling part
still compares 1,000,000 with 100,000 samples. The default is the issue's protocol: 100k × 120,
offset10-model, batch 512, 500 iterations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from measure import peak_rss_mb, run_in_subprocess

HERE = Path(__file__).resolve()
DEFAULT_HARNESS = HERE.parents[2] / "shared" / "bench" / "bench_cebra.py"
OURS = "neurodecode.models.contrastive:cebra_factory"
KEYS = (
    "iters_per_s",
    "steady_iters_per_s",
    "fit_s",
    "knn_r2_embedding",
    "knn_median_err_embedding",
    "knn_r2_pca",
    "knn_r2_raw",
    "transform_full_s",
    "transform_full_batched_s",
    "loss_last",
    "rss_after_data_mb",
    "rss_after_fit_mb",
)


def worker(harness: Path, argv: list[str]) -> None:
    """Run the harness in this process and print its figures plus VmHWM as one JSON line."""
    spec = importlib.util.spec_from_file_location("bench_cebra", harness)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # the harness prints its whole JSON; keep ours last
    try:
        res = module.main(argv)
    finally:
        sys.stdout.close()
        sys.stdout = stdout
    out = {k: res[k] for k in KEYS if k in res}
    out["peak_rss_mb"] = peak_rss_mb()
    out["env"] = res.get("env", {})
    print(json.dumps(out, default=str))


def scale_worker(harness: Path, n_samples: int, iters: int, device: str) -> None:
    """Steady ``time_delta`` step rate of neurodecode on the harness's data of ``n_samples``.

    Only ``fit`` is timed (no transform, no KNN: the harness's brute-force cosine KNN over a
    million samples would take far longer than the training being measured).
    """
    spec = importlib.util.spec_from_file_location("bench_cebra", harness)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from neurodecode.models.contrastive import ContrastiveEmbedding

    X, y = module.make_synthetic_data(n_samples, 120, seed=0)
    rss_data = peak_rss_mb()
    est = ContrastiveEmbedding(max_iter=iters, device=device)
    stamps: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    est.fit(
        X,
        y,
        callback=lambda step, _: stamps.append((step, time.perf_counter())),
        callback_frequency=max(5, iters // 10),
    )
    fit_s = time.perf_counter() - t0
    (s0, ta), (s1, tb) = stamps[1], stamps[-1]
    print(json.dumps({
        "n_samples": n_samples, "iters_per_s": iters / fit_s,
        "steady_iters_per_s": (s1 - s0) / (tb - ta), "fit_s": fit_s,
        "rss_after_data_mb": rss_data, "peak_rss_mb": peak_rss_mb(),
    }))  # fmt: skip


def scale_run(harness: Path, n_samples: int, iters: int, device: str) -> dict:
    """:func:`scale_worker` in a fresh process."""
    return run_in_subprocess(
        str(HERE),
        ["--scale-worker", "--harness", str(harness), "--n-samples", str(n_samples),
         "--iters", str(iters), "--device", device],
    )  # fmt: skip


def run(
    harness: Path,
    impl: str,
    conditional: str,
    iters: int,
    n_samples: int,
    device: str,
    baselines: bool = False,
    seed: int = 0,
) -> dict:
    """One harness run in a fresh process."""
    argv = [
        "--impl", impl, "--conditional", conditional, "--max-iter", str(iters),
        "--n-samples", str(n_samples), "--device", device, "--seed", str(seed),
        "--timing-every", str(max(5, iters // 10)),
    ]  # fmt: skip
    if not baselines:
        argv.append("--skip-baselines")
    t0 = time.perf_counter()
    res = run_in_subprocess(str(HERE), ["--worker", "--harness", str(harness), "--", *argv])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (≤ 2 min)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--harness", type=Path, default=DEFAULT_HARNESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--n-samples", type=int, help="samples of the comparison (100,000; 20,000 with --quick)"
    )
    parser.add_argument("--scale-samples", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("compare", "scaling"), help="run one part")
    parser.add_argument("--conditional", choices=("time_delta", "time"), help="compare only one")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--iters", type=int, default=500, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.n_samples is None:
        args.n_samples = 20_000 if args.quick and not args.scale_worker else 100_000
    if args.worker:
        worker(args.harness, [a for a in rest if a != "--"])
        return
    if args.scale_worker:
        scale_worker(args.harness, args.n_samples, args.iters, args.device)
        return
    if not args.harness.exists():
        sys.exit(f"the peer harness is not at {args.harness} (pass --harness)")
    try:
        import cebra  # noqa: F401
    except ImportError:
        sys.exit("the peer package `cebra` is not installed (pip install -e .[dev])")

    # (conditional, iterations of both implementations)
    if args.quick:
        plan = [("time_delta", 30), ("time", 150)]
        scale_iters = 150
    else:
        plan = [("time_delta", 500), ("time", 500)]
        scale_iters = 500
    results: dict = {"n_samples": args.n_samples, "device": args.device, "runs": {}}
    print(f"{'run':34} {'it/s':>8} {'steady':>8} {'R²':>7} {'fit MB':>8} {'fit s':>7}")

    def show(name: str, r: dict) -> None:
        results["runs"][name] = r
        print(
            f"{name:34} {r['iters_per_s']:8.2f} {r.get('steady_iters_per_s', float('nan')):8.2f} "
            f"{r['knn_r2_embedding']:7.3f} {r['rss_after_fit_mb']:8.0f} {r['fit_s']:7.1f}",
            flush=True,
        )

    if args.conditional:
        plan = [p for p in plan if p[0] == args.conditional]
    for conditional, iters in [] if args.only == "scaling" else plan:
        ours = run(
            args.harness,
            OURS,
            conditional,
            iters,
            args.n_samples,
            args.device,
            baselines=conditional == "time_delta" and not args.quick,
        )
        show(f"neurodecode {conditional} ({iters} it)", ours)
        peer = run(args.harness, "cebra", conditional, iters, args.n_samples, args.device)
        show(f"cebra {conditional} ({iters} it)", peer)
        results[conditional] = {
            "speedup_iters_per_s": ours["iters_per_s"] / peer["iters_per_s"],
            "speedup_steady": ours.get("steady_iters_per_s", float("nan"))
            / peer.get("steady_iters_per_s", float("nan")),
            "r2_neurodecode": ours["knn_r2_embedding"],
            "r2_cebra": peer["knn_r2_embedding"],
            "r2_difference": ours["knn_r2_embedding"] - peer["knn_r2_embedding"],
            "iterations": iters,
            "fit_peak_mb": {
                "neurodecode": ours["rss_after_fit_mb"],
                "cebra": peer["rss_after_fit_mb"],
            },
            "fit_peak_ratio": ours["rss_after_fit_mb"] / peer["rss_after_fit_mb"],
            "fit_added_mb": {
                "neurodecode": ours["rss_after_fit_mb"] - ours["rss_after_data_mb"],
                "cebra": peer["rss_after_fit_mb"] - peer["rss_after_data_mb"],
            },
            "r2_pca": ours.get("knn_r2_pca"),
            "r2_raw": ours.get("knn_r2_raw"),
        }

    scale = {}
    n_small = 100_000 if args.quick else args.n_samples
    for n in [] if args.only == "compare" else (n_small, args.scale_samples):
        scale[n] = scale_run(args.harness, n, scale_iters, args.device)
        print(
            f"{'neurodecode time_delta fit, ' + format(n, ',') + ' samples':34} "
            f"{scale[n]['iters_per_s']:8.2f} {scale[n]['steady_iters_per_s']:8.2f} {'':>7} "
            f"{scale[n]['peak_rss_mb']:8.0f} {scale[n]['fit_s']:7.1f}",
            flush=True,
        )
    if scale:
        small, big = scale[n_small], scale[args.scale_samples]
        results["scaling"] = {
            "n_small": n_small,
            "n_large": args.scale_samples,
            "steady_small": small["steady_iters_per_s"],
            "steady_large": big["steady_iters_per_s"],
            "ratio_large_to_small": big["steady_iters_per_s"] / small["steady_iters_per_s"],
            "peak_rss_mb_small": small["peak_rss_mb"],
            "peak_rss_mb_large": big["peak_rss_mb"],
        }

    print()
    for conditional in [c for c, *_ in plan if c in results]:
        r = results[conditional]
        print(
            f"{conditional:10}: neurodecode/cebra it/s {r['speedup_iters_per_s']:.1f}x "
            f"(steady {r['speedup_steady']:.1f}x); KNN R² {r['r2_neurodecode']:.3f} vs "
            f"{r['r2_cebra']:.3f} after {r['iterations']} it (diff {r['r2_difference']:+.3f}); "
            f"peak memory through fit {r['fit_peak_ratio']:.2f}x cebra's (fit added "
            f"{r['fit_added_mb']['neurodecode']:.0f} vs {r['fit_added_mb']['cebra']:.0f} MB)"
        )
    if results.get("time_delta", {}).get("r2_pca") is not None:
        r = results["time_delta"]
        print(f"baselines : KNN R² on PCA {r['r2_pca']:.3f}, on raw data {r['r2_raw']:.3f}")
    if "scaling" in results:
        s = results["scaling"]
        print(
            f"scaling   : steady time_delta it/s at {s['n_large']:,} samples / "
            f"{s['n_small']:,} = {s['ratio_large_to_small']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
