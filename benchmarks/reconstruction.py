"""Image reconstruction from brain activity: the metrics, the baselines and the costs.

Usage::

    python benchmarks/reconstruction.py --quick --json outputs/reconstruction_quick.json
    python benchmarks/reconstruction.py --json outputs/reconstruction.json      # full mode
    python benchmarks/reconstruction.py --only throughput --quick

Each section is one function ``section(quick, workdir) -> dict`` in :data:`SECTIONS`; their
keys are written side by side in one JSON object (plus ``"sections"``: seconds per section).

Section ``simulation``
    Simulated visual-cortex fMRI (:func:`neurodecode.simulate_visual.simulate_visual_fmri`:
    procedural scenes, V1/V4/LO voxels with subject-specific receptive fields and counts, HRF,
    noise; the test images are shared by every subject and shown only in the test block)
    written to stores, then the ``reconstruct`` stage itself
    (:func:`neurodecode.pipelines.reconstruct.reconstruct`): trained on the trained subjects'
    training trials, the new subject adapted from the first 10 % of its training trials.
    Per subject (``subjects``) and for the new subject (``new_subject``): ``pixcorr``,
    ``ssim``, ``two_way_encoder``, ``two_way_random_cnn``, ``retrieval_top1`` (brain → image;
    ``retrieval_top1_image_to_brain`` beside) with ``n_candidates``, and the same for the
    baselines (``ridge_to_pixels``, on the flattened trial, and ``ridge_time_mean``, on its
    time average; ``nearest_training_image``, ``lowlevel``; and ``best_sample``, the sample
    the brain-predicted tokens choose, while the reconstruction is the samples' mean); the top-level
    keys are the means over trained subjects. Also ``train_images_per_s`` (the diffusion
    UNet's training), ``sample_images_per_s``, ``unet_evals_per_image`` and ``braindive``.

Section ``throughput``
    The same diffusers UNet trained for a few steps and sampled: our training step
    (:class:`~neurodecode.models.vision.diffusion.ConditionalDiffusion` with the config's
    options: channels-last, bf16 autocast, ``torch.compile`` where asked) beside a plain
    diffusers loop on an identical UNet (fp32, contiguous, eager, ``DDPMScheduler.add_noise``,
    AdamW) in the same process: images/s of each and their ratio (``throughput``).

Section ``pretrained``
    The pretrained path offline: a tiny randomly initialised unCLIP pipeline saved to a local
    folder, loaded back with ``local_files_only`` and rendered from image embeddings
    (``pretrained``: seconds per image, UNet evaluations per image).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import peak_rss_mb  # noqa: E402

METRIC_KEYS = ("pixcorr", "ssim", "two_way_encoder", "two_way_random_cnn",
               "retrieval_top1_brain_to_image", "retrieval_top1_image_to_brain", "n_candidates")
BASELINES = ("ridge_to_pixels", "ridge_time_mean", "nearest_training_image", "lowlevel")
#: Scored beside the baselines: the brain-chosen sample (the reconstruction is the samples' mean)
COMPARED = (*BASELINES, "best_sample")


def _vision_config(quick: bool) -> dict:
    if quick:
        return {"images": "procedural", "n_subjects": 3, "n_images": 230, "n_test_images": 30,
                "n_voxels": [250, 450], "seed": 0}
    return {"images": "procedural", "n_subjects": 5, "n_images": 650, "n_test_images": 50,
            "n_voxels": [400, 900], "seed": 0}


def _stage_config(quick: bool, subjects: list[str]) -> dict:
    params = ({"diffusion": {"max_epochs": 6}, "encoder": {"params": {"max_epochs": 6}},
               "brain": {"embedding": {"train": {"max_epochs": 30}},
                         "lowlevel": {"train": {"max_epochs": 30}}}}
              if quick else {})
    return {"analysis": "bench_vision", "subjects": subjects[:-1], "new_subjects": subjects[-1:],
            "fractions": [0.1], "params": params, "n_permutations": 10 if quick else 50,
            "threads": 2, "seed": 0}


def _flat(methods: dict) -> dict:
    ours = methods["reconstruction"]
    out = {k: ours.get(k) for k in METRIC_KEYS}
    out["retrieval_top1"] = ours.get("retrieval_top1_brain_to_image")
    for b in (b for b in COMPARED if b in BASELINES or b in methods):
        m = methods.get(b, {})
        out[b] = {**{k: m.get(k) for k in METRIC_KEYS},
                  "retrieval_top1": m.get("retrieval_top1_brain_to_image")}
    return out


def section_simulation(quick: bool, workdir: Path) -> dict:
    """The reconstruct stage on simulated subjects (see the module docstring)."""
    from neurodecode.config import SimulationConfig
    from neurodecode.pipelines.reconstruct import ReconstructStageConfig, reconstruct
    from neurodecode.pipelines.simulate import simulate_to

    stores = workdir / "vision"
    t0 = time.perf_counter()
    simulate_to(stores, SimulationConfig(dataset="vision", modalities=[],
                                         vision=_vision_config(quick)))
    simulate_s = time.perf_counter() - t0
    subjects = sorted(p.name.removeprefix("sub-") for p in stores.glob("sub-*"))
    config = ReconstructStageConfig(**_stage_config(quick, subjects))
    out = workdir / "recon"
    reconstruct(config, [stores], out)
    data = json.loads((out / "metrics.json").read_text())
    per_subject = {r["subject"]: {**_flat(r["methods"]), "chance": r["chance"],
                                  "n_test": r["n_test"]}
                   for r in data["rows"] if r["kind"] == "trained"}
    new = [r for r in data["rows"] if r["kind"] == "new"]
    result: dict = {"subjects": per_subject}
    for key in ("pixcorr", "ssim", "two_way_encoder", "two_way_random_cnn", "retrieval_top1",
                "retrieval_top1_image_to_brain"):
        values = [v[key] for v in per_subject.values() if v[key] is not None]
        result[key] = float(np.mean(values)) if values else None
    result["n_candidates"] = min(v["n_candidates"] or 0 for v in per_subject.values())
    result["baselines"] = {
        b: {k: float(np.mean([v[b][k] for v in per_subject.values() if v[b][k] is not None]))
            for k in ("pixcorr", "ssim", "two_way_encoder", "two_way_random_cnn",
                      "retrieval_top1")}
        for b in COMPARED if any(b in r["methods"] for r in data["rows"])}
    if new:
        r = new[-1]
        result["new_subject"] = {"subject": r["subject"], "fraction": r["fraction"],
                                 "n_train_trials": r["n_train_trials"],
                                 **_flat(r["methods"]), "chance": r["chance"]}
    rows = data["rows"]
    result.update(
        train_images_per_s=data["timings"].get("train_images_per_s"),
        sample_images_per_s=float(np.mean([r["sample_images_per_s"] for r in rows])),
        unet_evals_per_image=data["sampling"]["unet_evals_per_image"],
        sampling=data["sampling"], timings={**data["timings"], "simulate_s": simulate_s},
        braindive=data.get("braindive"),
        chance={"two_way": 0.5, "retrieval_top1": 1.0 / max(1, result["n_candidates"])},
    )
    return result


def _plain_step(unet, scheduler, opt, images, tokens, generator) -> None:
    noise = torch.randn(images.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),),
                      generator=generator)
    noisy = scheduler.add_noise(images * 2 - 1, noise, t)
    loss = torch.nn.functional.mse_loss(unet(noisy, t, encoder_hidden_states=tokens).sample,
                                        noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def section_throughput(quick: bool, workdir: Path) -> dict:
    """Our UNet training and sampling beside a plain diffusers loop on the same UNet."""
    from diffusers import DDPMScheduler

    from neurodecode.models.vision.diffusion import ConditionalDiffusion, DiffusionConfig
    from neurodecode.models.vision.sampling import sample

    torch.manual_seed(0)
    batch, steps = (32, 4) if quick else (64, 10)
    cfg = DiffusionConfig()
    model = ConditionalDiffusion(cfg, n_tokens=16, token_dim=32)
    plain = ConditionalDiffusion(cfg.model_copy(update={"channels_last": False,
                                                       "precision": "32-true",
                                                       "compile": False}),
                                 n_tokens=16, token_dim=32).unet
    plain.load_state_dict(model.unet.state_dict())
    images = torch.rand(batch, 3, cfg.image_size, cfg.image_size)
    tokens = torch.randn(batch, 16, 32)
    gen = torch.Generator().manual_seed(0)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model.loss(images, tokens, generator=gen).backward()  # warm-up (compile, allocator)
    opt.zero_grad()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(images, tokens, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ours = batch * steps / (time.perf_counter() - t0)

    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                          beta_schedule=cfg.beta_schedule)
    popt = torch.optim.AdamW(plain.parameters(), lr=cfg.lr)
    _plain_step(plain, sched, popt, images, tokens, gen)
    t0 = time.perf_counter()
    for _ in range(steps):
        _plain_step(plain, sched, popt, images, tokens, gen)
    peer = batch * steps / (time.perf_counter() - t0)

    model.eval()
    n = 16 if quick else 64
    t0 = time.perf_counter()
    out = sample(model, torch.randn(n, 16, 32), steps=cfg.steps,
                 guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(1))
    sample_s = time.perf_counter() - t0
    return {"throughput": {
        "device": "cpu", "threads": torch.get_num_threads(), "batch": batch,
        "image_size": cfg.image_size, "unet_parameters": int(sum(
            p.numel() for p in model.unet.parameters())),
        "options": {"channels_last": cfg.channels_last, "precision": cfg.precision,
                    "compile": cfg.compile},
        "train_images_per_s": ours, "plain_diffusers_train_images_per_s": peer,
        "train_ratio_vs_plain": ours / peer,
        "sample_images_per_s": n / sample_s,
        "unet_evals_per_image": out.unet_evals_per_image, "steps": out.steps}}


def section_pretrained(quick: bool, workdir: Path) -> dict:
    """A tiny unCLIP pipeline saved locally, loaded offline and rendered."""
    import os

    from neurodecode.models.vision.pretrained import PretrainedRenderer, save_tiny_unclip_pipeline

    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = save_tiny_unclip_pipeline(workdir / "tiny_unclip", image_size=32)
    renderer = PretrainedRenderer.from_folder(folder)
    n = 2 if quick else 8
    t0 = time.perf_counter()
    out = renderer.render(torch.randn(n, renderer.embed_dim), steps=10,
                          generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    return {"pretrained": {"folder_kind": type(renderer.pipeline).__name__,
                           "seconds_per_image": seconds / n,
                           "unet_evals_per_image": out.unet_evals_per_image,
                           "embed_dim": renderer.embed_dim,
                           "image_shape": list(out.images.shape[1:])}}


SECTIONS = {
    "simulation": section_simulation,
    "throughput": section_throughput,
    "pretrained": section_pretrained,
}


def main(argv: list[str] | None = None) -> dict:
    """Run the sections and write their results as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems (minutes)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="subset to run")
    args = parser.parse_args(argv)
    results: dict = {"quick": args.quick, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="reconstruction_bench_") as tmp:
        for name in args.only or list(SECTIONS):
            t0 = time.perf_counter()
            results.update(SECTIONS[name](args.quick, Path(tmp)))
            results["sections"][name] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {results['sections'][name]} s", flush=True)
    results["peak_rss_mb"] = peak_rss_mb()
    text = json.dumps(results, indent=2, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
