"""Small stages for the workflow tests (imported by workflows through ``modules:``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from neurodecode.config import StageConfig
from neurodecode.pipelines import Slot, Stage, register


class ConcatConfig(StageConfig):
    text: str = ""
    sleep: float = 0.0
    fail: bool = False


@register
class ConcatStage(Stage):
    """Write ``text`` and the content of every input file (sleeping first, failing on demand)."""

    name = "concat"
    Config = ConcatConfig
    inputs = {"sources": Slot("text files", many=True, required=False)}
    outputs = {"out": Slot("a text file")}

    def run(self, config, inputs, outputs):
        start = time.time()
        out = outputs["out"]
        out.write_text("partial")  # a half-written output the engine must never show
        if config.sleep:
            marker = os.environ.get("NEURODECODE_TEST_MARKER")
            if marker:
                Path(marker).write_text(str(os.getpid()))
            time.sleep(config.sleep)
        if config.fail:
            raise RuntimeError(f"asked to fail ({config.text})")
        parts = [config.text]
        for p in inputs.get("sources", []):
            files = sorted(Path(p).iterdir()) if Path(p).is_dir() else [Path(p)]
            parts += [f.read_text() for f in files]
        out.write_text("\n".join(parts))
        return {"start": start, "end": time.time(), "pid": os.getpid()}


class SplitConfig(StageConfig):
    parts: int = 2


@register
class SplitStage(Stage):
    """Write a folder of ``parts`` files (a folder output)."""

    name = "split"
    Config = SplitConfig
    inputs = {"source": Slot("a text file")}
    outputs = {"folder": Slot("a folder", folder=True)}

    def run(self, config, inputs, outputs):
        text = Path(inputs["source"][0]).read_text()
        outputs["folder"].mkdir()
        for i in range(config.parts):
            (outputs["folder"] / f"part-{i}.txt").write_text(json.dumps([i, text]))
