"""``neurodecode adapt``: a trained cross-subject model adapted to new subjects, few-shot.

It runs the ``adapt`` stage (:mod:`neurodecode.pipelines.adapt`) for one strategy and one
budget, without the few-shot curve: each new subject's samples are built as the model's were
(the sample spec and split of its folder), the decoder is adapted with the first ``--budget`` of
the subject's training part and scored on its test part, and the adapted model is written to
``--out/sub-<s>/model.pt`` beside ``fewshot.json`` and a provenance record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from ._common import UserError, check_writable, console


def _model_folder(model: Path) -> Path:
    """The model folder a ``--model`` names (the folder, or its ``model.pt``)."""
    if not model.exists():
        raise UserError(f"--model {model}: no such file or folder")
    folder = model.parent if model.is_file() else model
    if not (folder / "model.pt").is_file() or not (folder / "metrics.json").is_file():
        raise UserError(
            f"--model {model}: not a model folder of the cross_subject stage (it needs "
            "model.pt with metrics.json beside it: the sample spec and split of the model)"
        )
    return folder


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that holds something else (the stage replaces the whole folder)."""
    check_writable(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "fewshot.json").is_file():
        raise UserError(f"--out {out} is a folder that is not the output of an adaptation; "
                        "it would be replaced: give a new or empty folder")


def _line(subject: str, entry: dict, metric: str, out: Path) -> str:
    saved = entry["saved"]

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    p = saved.get("p_value")
    return (f"sub-{subject}: {metric} {num(saved.get('score'))} on {entry['n_test']} test "
            f"samples (chance {num(saved.get('chance'))}"
            + (f", p {p:.3g}" if p is not None else "")
            + f"); {saved['strategy']} with {saved['n_train']} samples ({saved['budget']}) in "
            f"{saved['seconds']:.1f} s → {out / saved['path']}")


@app.command()
def adapt(
    model: Annotated[
        Path, typer.Option("--model", help="The cross_subject stage's model folder, or its "
                                           "model.pt.")
    ],
    subject: Annotated[
        list[Path], typer.Option("--subject", help="Stores (or a folder of stores) of a new "
                                                   "subject (repeatable).")
    ],
    strategy: Annotated[
        str, typer.Option("--strategy", help="a (adapter), b (lora), c (full), d (align) or "
                                             "e (zero_shot).")
    ],
    budget: Annotated[
        str, typer.Option("--budget", help="Samples adapted on, from the start of the "
                                           "subject's training part: 5min, 90s, 10%, "
                                           "15trials or all.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (sub-<s>/model.pt, "
                                                    "fewshot.json).")] = Path("adapted"),
    reference: Annotated[
        list[Path] | None,
        typer.Option("--reference", help="Stores of the model's training subjects (strategy d, "
                                         "and the initialisation of a-c; default: the stores "
                                         "the model folder records, when they still exist)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Adapt a cross-subject model to new subjects with one strategy and budget."""
    from pydantic import ValidationError

    from ..models.fewshot import parse_strategy
    from ..pipelines import StageError, run_stage
    from ..pipelines.adapt import AdaptConfig, parse_budget

    try:
        letter = parse_strategy(strategy)
    except ValueError as err:
        raise UserError(f"--strategy: {err}") from None
    try:
        parse_budget(budget)
    except ValueError as err:
        raise UserError(f"--budget: {err}") from None
    folder = _model_folder(model)
    for path in [*subject, *(reference or [])]:
        if not path.exists():
            what = "--subject" if path in subject else "--reference"
            raise UserError(f"{what} {path}: no such store or folder")
    _check_out(out)
    try:
        config = AdaptConfig(strategies=[], fractions=[], baselines=[], strategy=letter,
                             budget=budget)
    except ValidationError as err:  # pragma: no cover - the values are checked above
        raise UserError(str(err).splitlines()[0]) from None
    inputs = {"model": folder, "stores": list(subject), "reference": list(reference or [])}
    try:
        with console.status("adapting"):
            run_stage("adapt", config, inputs, {"adapted": out})
    except StageError as err:
        raise UserError(str(err).removeprefix("stage adapt: ")) from None
    data = json.loads((out / "fewshot.json").read_text())
    if as_json:
        typer.echo(json.dumps({"out": str(out), "metric": data["metric"],
                               "notes": data["notes"], "subjects": data["subjects"]}, indent=2))
        return
    for note in data["notes"]:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for s, entry in data["subjects"].items():
        console.print(_line(s, entry, data["metric"], out), highlight=False, soft_wrap=True)
