"""The trivial stage of ``benchmarks/workflow.py``: what is measured is the engine, not a stage."""

from __future__ import annotations

from pathlib import Path

from neurodecode.config import StageConfig
from neurodecode.pipelines import Slot, Stage, register


class EchoConfig(StageConfig):
    text: str = ""


@register
class EchoStage(Stage):
    """Write ``text`` followed by the inputs' first bytes."""

    name = "echo"
    Config = EchoConfig
    inputs = {"sources": Slot("small text files", many=True, required=False)}
    outputs = {"out": Slot("a small text file")}

    def run(self, config, inputs, outputs):
        parts = [config.text] + [Path(p).read_text()[:64] for p in inputs.get("sources", [])]
        outputs["out"].write_text("\n".join(parts))
