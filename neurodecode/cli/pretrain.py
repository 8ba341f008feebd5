"""``neurodecode pretrain``: self-supervised pretraining on unlabelled recordings of many subjects.

A codebook model (``--model codebook_seeg``) learns from signal windows; a spike-token model
(``--model spike_gpt``) learns to generate the spikes of every current window from its past
window (spikes or calcium stores, any sessions; ``--behavior`` adds covariates).

It runs the ``pretrain`` stage (:mod:`neurodecode.pipelines.pretrain`): every subject's
recordings in ``--store`` are cut into windows (by default inside the stores' ``train``
intervals only), a codebook model (``--model``: a model YAML with a ``pretrain`` section, or a
shipped name such as ``codebook_seeg``) is pretrained on them without labels, and
``--out`` gets ``pretrain.pt``, ``config.yaml``, ``metrics.json`` (codebook health, history,
subjects) and a provenance record. A ``cross_subject`` stage given that folder as its
``pretrained`` input fine-tunes from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from . import app
from ._common import UserError, check_writable, console


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that holds something else (the stage replaces the whole folder)."""
    check_writable(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "pretrain.pt").is_file():
        raise UserError(f"--out {out} is a folder that is not the output of a pretraining; "
                        "it would be replaced: give a new or empty folder")


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _spike_summary(data: dict[str, Any], out: Path) -> list[str]:
    tok, nll = data["tokens"], data["next_token_nll"]
    lines = [f"{tok['n_units']} units in {len(data['recordings'])} recording(s): "
             f"{tok['n_train']} training + {tok['n_val']} validation windows of "
             f"{tok['window']:g} s (past {tok['past']:g} s, dt {tok['dt']:g} s)"]
    lines.append(f"held-out next-token NLL ({nll['split']}, {nll['n_spikes']} spikes): model "
                 f"{_num(nll['model'])} nats/spike, inhomogeneous Poisson "
                 f"{_num(nll.get('poisson'))}, constant rate {_num(nll.get('constant'))}")
    conn = data.get("connectivity")
    if conn:
        lines.append(f"connectivity vs the true circuit: AUROC {_num(conn['auroc'])} (chance "
                     f"{_num(conn['chance_mean'])}, p {_num(conn['p_value'], 4)})")
    lines.append(f"{data['epochs']} epochs in {data['fit_seconds']:.1f} s "
                 f"({data['throughput']['train_tokens_per_s']:.0f} tokens/s) → "
                 f"{out / 'pretrain.pt'}")
    return lines


def _summary(data: dict[str, Any], out: Path) -> list[str]:
    if data.get("family") == "spike_tokens":
        return _spike_summary(data, out)
    num = _num

    health, mask = data["health"], data["mask_accuracy"]
    lines = [f"sub-{s}: {v['n_train']} training + {v['n_val']} validation windows, "
             f"{v['n_channels']} channels" for s, v in data["subjects"].items()]
    lines.append(
        f"codebook on the {data['scored_on']} windows: perplexity "
        f"{num(health.get('perplexity'), 1)} of {health.get('codebook_size')} codes, "
        f"{health.get('used')} used, dead share {num(health.get('dead_fraction'))}"
        + (" — COLLAPSED" if health.get("collapsed") else "")
        + f"; reconstruction R² {num(data['reconstruction_r2'])}; masked-code accuracy "
        f"{num(mask.get('accuracy'))} (majority code {num(mask.get('majority'))})")
    lines.append(f"{data['epochs'].get('tokenizer')} tokenizer + {data['epochs'].get('masked')} "
                 f"masked epochs in {data['fit_seconds']:.1f} s → {out / 'pretrain.pt'}")
    return lines


#: The command's --help (paragraphs; typer keeps the line breaks of a docstring).
_HELP = (
    "Pretrain a codebook model (Du-IN style) or a spike-token model (Neuroformer style) on "
    "unlabelled recordings of many subjects.\n\n"
    "Every subject's recordings are cut into --length windows (inside the stores' train "
    "intervals unless --intervals says otherwise, so that test data never reach the "
    "pretraining); the model's VQ-VAE tokenizer, then its masked-code model, are trained on "
    "them without labels, each stopped early on the last --val-fraction of every subject's "
    "windows.\n\n"
    "--out gets pretrain.pt, config.yaml and metrics.json: the codebook's perplexity, used and "
    "dead codes, reconstruction R², masked-code accuracy and per-epoch history. Fine-tune from "
    "it with the cross_subject stage's 'pretrained' input (trials with the windows' number of "
    "samples: epochs hold (tmax - tmin) * sfreq + 1).\n\n"
    "With a spike-token model (--model spike_gpt, spikes or calcium stores), the windows are "
    "the model's own (current and past window, --stride apart); metrics.json holds the "
    "held-out next-token NLL beside an inhomogeneous Poisson baseline, generated-vs-real "
    "spike statistics and, for simulated circuits, the connectivity AUROC. Fine-tune it with "
    "the finetune stage."
)


@app.command(help=_HELP)
def pretrain(
    model: Annotated[
        str, typer.Option("--model", help="Model config: a YAML file (a codebook model with a "
                                          "pretrain section, or a spike-token model) or a "
                                          "shipped name (codebook_seeg, codebook_seeg_single, "
                                          "spike_gpt).")
    ],
    store: Annotated[
        list[Path], typer.Option("--store", help="A recording store or a folder of stores, "
                                                 "any subjects and montages (repeatable).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (pretrain.pt, config.yaml, "
                                                    "metrics.json).")] = Path("pretrained"),
    length: Annotated[float, typer.Option("--length", help="Window length in seconds; "
                                                           "fine-tuning trials must have as "
                                                           "many samples.")] = 1.0,
    stride: Annotated[float | None, typer.Option("--stride", help="Seconds between window "
                                                                  "starts (default: the "
                                                                  "length).")] = None,
    intervals: Annotated[
        list[str] | None,
        typer.Option("--intervals", help="Stored split intervals the windows lie in: train, "
                                         "valid, test (repeatable; default train), or all "
                                         "(whole recordings)."),
    ] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="Keep recordings of this "
                                                                    "modality (eeg, seeg, "
                                                                    "ecog).")] = None,
    subject: Annotated[list[str] | None, typer.Option("--subject", help="Keep this subject "
                                                                        "(repeatable).")] = None,
    run: Annotated[list[str] | None, typer.Option("--run", help="Keep this run "
                                                                "(repeatable).")] = None,
    l_freq: Annotated[float | None, typer.Option("--l-freq", help="Band-pass low edge (Hz), "
                                                                  "before windowing.")] = None,
    h_freq: Annotated[float | None, typer.Option("--h-freq", help="Band-pass high edge "
                                                                  "(Hz).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Last share of each "
                                                                       "subject's windows "
                                                                       "for early stopping "
                                                                       "and the scores.")
                            ] = 0.15,
    tokenizer_epochs: Annotated[int | None, typer.Option("--tokenizer-epochs", help="At most "
                                                         "this many tokenizer (VQ-VAE) epochs "
                                                         "(default: the model's).")] = None,
    masked_epochs: Annotated[int | None, typer.Option("--masked-epochs", help="At most this "
                                                      "many masked-code epochs (default: the "
                                                      "model's).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Windows per batch "
                                                   "(default: the model's).")] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", help="Spike-token models: "
                                                   "at most this many epochs.")] = None,
    behavior: Annotated[list[str] | None, typer.Option("--behavior", help="Spike-token "
                                                       "models: a behaviour covariate "
                                                       "(repeatable).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation, batches and "
                                                     "masks.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pretrain a codebook model (Du-IN style) on unlabelled windows of many subjects."""
    from ..pipelines import StageError, get_stage, run_stage, validate_config

    for path in store:
        if not path.exists():
            raise UserError(f"--store {path}: no such store or folder")
    _check_out(out)
    values: dict[str, Any] = {
        "model": model, "length": length, "stride": stride, "modality": modality,
        "subjects": subject or None, "runs": run or None, "l_freq": l_freq, "h_freq": h_freq,
        "val_fraction": val_fraction, "tokenizer_epochs": tokenizer_epochs,
        "masked_epochs": masked_epochs, "batch_size": batch_size, "seed": seed,
        "max_epochs": max_epochs, "behavior": behavior or [],
    }  # fmt: skip
    if intervals:  # "all": whole recordings; unset: the stage's default (train)
        values["intervals"] = None if [v.lower() for v in intervals] == ["all"] \
            else list(intervals)
    try:
        config = validate_config(get_stage("pretrain"), values)
        with console.status("pretraining"):
            run_stage("pretrain", config, {"stores": list(store)}, {"pretrained": out})
    except StageError as err:
        raise UserError(str(err).removeprefix("stage pretrain: ")) from None
    data = json.loads((out / "metrics.json").read_text())
    if as_json:
        keys = (("recordings", "tokens", "next_token_nll", "connectivity", "throughput",
                 "epochs", "fit_seconds") if data.get("family") == "spike_tokens" else
                ("subjects", "scored_on", "health", "reconstruction_r2", "mask_accuracy",
                 "segments_per_s", "epochs", "fit_seconds"))
        typer.echo(json.dumps({"out": str(out), **{k: data[k] for k in keys}}, indent=2))
        return
    for line in _summary(data, out):
        console.print(line, highlight=False, soft_wrap=True)
