"""``neurodecode reconstruct``: images seen in recorded trials, rendered by a trained model.

The model is the ``model.pt`` of a ``reconstruct`` stage (:mod:`neurodecode.pipelines.reconstruct`):
the trials of ``--store`` are cut as its training trials were, and every subject must be one the
model serves (trained or adapted). ``--out`` gets one PNG per trial, a grid per subject and
``reconstructions.json``; with a stimulus store (``stimuli.zarr`` beside the stores, or
``--stimuli``) the seen images go beside the reconstructions and the scores are computed.
Each trial's image is the mean of its samples, or (``sampling.combine: select``) the one
sample chosen from the brain-predicted embedding alone; the target image is never consulted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from ._common import UserError, check_writable, console

_HELP = (
    "Reconstruct the images seen in the trials of recording stores with a trained "
    "reconstruction model (the model.pt of a reconstruct stage).\n\n"
    "Trials are cut as the model's training trials were; --split keeps the trials of one "
    "stored interval (test by default; all: every trial). --out gets images/<subject>/*.png, "
    "grid_<subject>.png and reconstructions.json. With a stimulus store (stimuli.zarr beside "
    "the stores, or --stimuli) the grids show the seen images and the scores (PixCorr, SSIM, "
    "two-way identification, retrieval) are computed after the reconstructions are final."
)


@app.command(help=_HELP)
def reconstruct(
    model: Annotated[Path, typer.Option("--model", help="A reconstruction checkpoint "
                                                        "(model.pt of a reconstruct job).")],
    store: Annotated[list[Path], typer.Option("--store", help="A recording store or a folder "
                                                              "of stores (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (replaced as a whole).")
                   ] = Path("reconstructions"),
    split: Annotated[str, typer.Option("--split", help="train, valid, test or all.")] = "test",
    stimuli: Annotated[Path | None, typer.Option("--stimuli", help="Stimulus store (default: "
                                                                   "stimuli.zarr beside the "
                                                                   "stores).")] = None,
    subject: Annotated[list[str] | None, typer.Option("--subject", help="Keep this subject "
                                                                        "(repeatable).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling noise.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reconstruct seen images from brain activity with a trained model."""
    from ..pipelines import StageError
    from ..pipelines.reconstruct import apply_model

    if not model.is_file():
        raise UserError(f"--model {model}: no such checkpoint")
    for path in store:
        if not path.exists():
            raise UserError(f"--store {path}: no such store or folder")
    if split not in ("train", "valid", "test", "all"):
        raise UserError(f"--split {split!r}: use train, valid, test or all")
    check_writable(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "reconstructions.json").is_file():
        raise UserError(f"--out {out} is a folder that is not the output of a reconstruction; "
                        "it would be replaced: give a new or empty folder")
    try:
        with console.status("reconstructing"):
            summary = apply_model(model, store, out, split=None if split == "all" else split,
                                  stimuli=stimuli, subjects=subject, seed=seed)
    except (StageError, ValueError, FileNotFoundError) as err:
        raise UserError(str(err).removeprefix("stage reconstruct: ")) from None
    if as_json:
        typer.echo(json.dumps({"out": str(out), **summary}, indent=2))
        return
    for s, entry in summary["subjects"].items():
        line = (f"sub-{s}: {entry['n_trials']} trials reconstructed "
                f"({entry['unet_evals_per_image']} UNet evaluations per image)")
        scores = entry.get("scores")
        if scores:
            line += (f"; PixCorr {scores['pixcorr']:.3f}, SSIM {scores['ssim']:.3f}, "
                     f"two-way (encoder) {scores.get('two_way_encoder', float('nan')):.3f}")
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"→ {out}", highlight=False)
