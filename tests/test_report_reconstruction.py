"""The report's image reconstruction section, on reconstruct folders written by hand.

The folders follow the format of :mod:`neurodecode.pipelines.reconstruct` (``metrics.json``,
``grid_<name>.png``, ``braindive.png``), with PNGs drawn by
:func:`neurodecode.report.figures.image_grid`, so every number and image the section shows can
be checked against its source.
"""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurodecode.pipelines import StageError, run_stage
from neurodecode.report import SECTIONS, ReportError, write_report
from neurodecode.report import figures as rfig
from neurodecode.report.html import load_reconstruction

NASTY = 'seen <i>images</i> & "more" <script>alert(1)</script>'


def _scores(pixcorr: float | None, ssim: float, two_way: float, *, retrieval: bool = True
            ) -> dict[str, Any]:
    out: dict[str, Any] = {"pixcorr": pixcorr, "ssim": ssim, "two_way_encoder": two_way,
                           "two_way_random_cnn": two_way - 0.05}
    if retrieval:
        out.update(retrieval_top1_brain_to_image=two_way / 3,
                   retrieval_top1_image_to_brain=two_way / 4, n_candidates=50)
    return out


def _row(subject: str, kind: str, fraction: float | None, shift: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "subject": subject, "kind": kind, "fraction": fraction, "n_train_trials": 340,
        "n_test": 50,
        "methods": {
            "reconstruction": _scores(0.41 + shift, 0.52, 0.91),
            "best_sample": _scores(0.36, 0.47, 0.90),
            "lowlevel": _scores(0.38, 0.57 + shift, 0.74),
            "ridge_to_pixels": _scores(0.45, 0.31, 0.66, retrieval=False),
            "nearest_training_image": _scores(None, 0.28, 0.83),
        },
        "chance": {"two_way": 0.5, "retrieval_top1_brain_to_image": 0.02,
                   "retrieval_top1_image_to_brain": 0.02, "n_candidates": 50,
                   "pixcorr": 0.013, "ssim": 0.104},
        "sample_seconds": 3.0, "sample_images_per_s": 16.7, "unet_evals_per_image": 20,
        "n_samples": 2,
    }
    if kind == "new":
        row.update(adapt_seconds_of_data=200.0, adapt_last_stop=400.0, test_first_start=1800.0)
    return row


def _stats(mean: float, sd: float) -> dict[str, Any]:
    return {"mean": mean, "sd": sd, "n": 8}


METRICS: dict[str, Any] = {
    "analysis": "sim_vision", "description": NASTY, "model": "reconstruction",
    "image_size": 32, "encoder": "trained", "renderer": "unet", "subjects": ["01", "02"],
    "new_subjects": ["05"], "n_images": 450, "n_test_images": 50, "n_fit_images": 400,
    "sampling": {"steps": 10, "guidance_scale": 2.0, "strength": 0.5, "n_samples": 2,
                 "unet_evals_per_sample": 10, "unet_evals_per_image": 20},
    "timings": {"encoder_s": 12.0, "embedding_s": 5.0, "lowlevel_s": 3.0, "diffusion_s": 60.0,
                "diffusion_epochs": 40, "train_images_per_s": 312.5, "total_s": 120.0},
    "rows": [_row("01", "trained", None, 0.0), _row("02", "trained", None, 0.1),
             _row("05", "new", 0.1, -0.2)],
    "braindive": {
        "region": "V4", "scale": 30.0, "steps": 10,
        "predicted_activation": {"guided": _stats(1.2, 0.3), "unguided": _stats(0.4, 0.2),
                                 "stimuli": _stats(0.3, 0.25)},
        "difference": 0.9, "p_value": 0.001, "encoding_train_r": 0.61, "validation_r": 0.47,
        "feature": {"guided": _stats(0.8, 0.1), "unguided": _stats(0.5, 0.1),
                    "stimuli": _stats(0.45, 0.12)},
        "n_fit_trials": 1300, "unet_evals_per_image": 10, "figure": "braindive.png",
    },
    "grids": {"01": "grid_01.png", "02": "grid_02.png", "05 (0.1)": "grid_05_0.1.png"},
    "leakage": {"test_images_in_fit": 0, "split": "stored intervals"},
    "stimuli": "/data/sim/stimuli.zarr",
}


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((3, 8, 8, 3))


def _grid(seed: int) -> bytes:
    return rfig.image_grid({"seen": _images(seed), "reconstruction": _images(seed + 1)})


def _folder(path: Path, metrics: dict[str, Any], *, skip: tuple[str, ...] = ()) -> Path:
    """A reconstruct folder: ``metrics`` and a PNG per grid and BrainDiVE figure."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(metrics))
    names = [*(metrics.get("grids") or {}).values()]
    if metrics.get("braindive") and metrics["braindive"].get("figure"):
        names.append(metrics["braindive"]["figure"])
    for seed, name in enumerate(names):
        if name not in skip:
            (path / name).write_bytes(_grid(10 * seed))
    return path


class _Dom(HTMLParser):
    """Ids, image sources, and table rows as (cell text, cell class) lists."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, str] = {}
        self.srcs: list[str] = []
        self.tags: set[str] = set()
        self.rows: list[list[tuple[str, str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._cls = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids[a["id"]] = tag
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell, self._cls = [], a.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append((" ".join("".join(self._cell).split()), self._cls))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def row(self, first: str) -> list[tuple[str, str]]:
        """The first table row whose first cell is ``first``."""
        for row in self.rows:
            if row and row[0][0] == first:
                return row
        raise AssertionError(f"no table row starting with {first!r}")


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}">')
    return text[start : text.index("</section>", start)]


@pytest.fixture(scope="module")
def recon(tmp_path_factory) -> dict[str, Any]:
    """A reconstruct folder (grid_02.png missing) and its report, written by the stage."""
    root = tmp_path_factory.mktemp("recon")
    folder = _folder(root / "reconstruct" / "sim", METRICS, skip=("grid_02.png",))
    path = root / "report.html"
    record = run_stage("report", {"thumbnails": False}, {"reconstruct": [folder]},
                       {"report": path})
    text = path.read_text(encoding="utf-8")
    return {"folder": folder, "record": record, "text": text, "dom": _Dom(text),
            "part": _section(text, "reconstruction")}


#: Cells before the scores: subject, (fraction, adapted on,) train trials, test images.
_LEAD_TRAINED = 3
_LEAD_NEW = 5


def test_section_settings_and_counts(recon):
    summary = recon["record"]["summary"]
    assert summary["reconstructions"] == 1 and summary["reconstruction_rows"] == 3
    dom, part = recon["dom"], recon["part"]
    assert dom.ids.get("reconstruction") == "section"
    assert list(dict(SECTIONS))[-3:] == ["reconstruction", "provenance", "workflow"]
    assert 'href="#reconstruction">Image reconstruction (1)</a>' in recon["text"]
    for piece in ("model reconstruction · encoder trained · renderer unet · image size 32×32",
                  "subjects 01, 02 · new subjects 05 · images: 400 fit, 50 test of 450",
                  "test images in the fit: 0 (stored intervals)",
                  "10 steps, guidance 2.0, strength 0.50, 2 samples × 10 UNet evaluations = "
                  "20 UNet evaluations per image",
                  "encoder 12.0 s, embedding decoder 5 s, low-level decoder 3 s, "
                  "diffusion 1 min 0 s, 40 diffusion epochs at 312.5 train images/s, "
                  "total 2 min 0 s"):
        assert piece in part, piece
    # strings from the data are escaped
    assert NASTY in "".join(dom.text) and "<i>images</i>" not in recon["text"]
    assert "script" not in dom.tags


def test_tables_numbers_best_and_chance(recon):
    dom = recon["dom"]
    methods = ["reconstruction", "best_sample", "lowlevel", "ridge_to_pixels",
               "nearest_training_image"]
    keys = ["pixcorr", "ssim", "two_way_encoder", "two_way_random_cnn",
            "retrieval_top1_brain_to_image", "retrieval_top1_image_to_brain"]
    headers = next(r for r in dom.rows if r and r[0][0] == "subject")
    assert [c for c, _ in headers][_LEAD_TRAINED : _LEAD_TRAINED + 5] == [
        "reconstruction", "best sample (brain-chosen)", "low-level", "ridge to pixels",
        "nearest training image"]
    for source in METRICS["rows"]:
        lead = _LEAD_NEW if source["kind"] == "new" else _LEAD_TRAINED
        row = dom.row(source["subject"])
        cells = row[lead : lead + len(methods) * len(keys)]
        for i, method in enumerate(methods):
            for j, key in enumerate(keys):
                value = source["methods"][method].get(key)
                text, cls = cells[i * len(keys) + j]
                assert text == ("—" if value is None else f"{value:.3f}"), (method, key)
                best = max(v for m in methods
                           if (v := source["methods"][m].get(key)) is not None)
                assert ("best" in cls.split()) == (value == best), (source["subject"], method, key)
        # the chance row under it: the same levels under every method
        chance = dom.row(f"chance ({source['subject']})")[lead:]
        assert [c for c, _ in chance[: len(keys)]] == ["0.013", "0.104", "0.500", "0.500",
                                                       "0.020", "0.020"]
        levels = [c for c, _ in chance]
        assert levels[: len(keys)] == levels[len(keys) : 2 * len(keys)]
    # subject 01: ridge has the best PixCorr, the low-level branch the best SSIM
    row = dom.row("01")[_LEAD_TRAINED:]
    assert row[3 * 6][0] == "0.450" and "best" in row[3 * 6][1]
    assert row[2 * 6 + 1][0] == "0.570" and "best" in row[2 * 6 + 1][1]
    # the new subject: labelled fraction and the seconds of data it was adapted on
    new = [c for c, _ in dom.row("05")]
    assert new[:5] == ["05", "10%", "3 min 20 s", "340", "50"]
    assert new[-1] == "3 s, 16.7 images/s, 20 UNet evals/image"
    part = recon["part"]
    assert part.count("retrieval: top-1 among 50 candidates") == 2
    assert part.index("trained subjects") < part.index("new subjects (few-shot adaptation)")


def test_grids_embedded_and_missing_one_noted(recon):
    folder, part, dom = recon["folder"], recon["part"], recon["dom"]
    for i, (name, file) in ((1, ("01", "grid_01.png")), (3, ("05 (0.1)", "grid_05_0.1.png"))):
        uri = rfig.data_uri((folder / file).read_bytes())
        assert f'<figure id="recon-1-grid-{i}"><img src="{uri}"' in part
        assert f"<figcaption>{name} ({file}): first row the seen test images" in part
    assert "recon-1-grid-2" not in dom.ids
    assert f"grid 02: {folder / 'grid_02.png'} is missing" in part
    assert len({rfig.data_uri((folder / f).read_bytes())
                for f in ("grid_01.png", "grid_05_0.1.png", "braindive.png")}) == 3


def test_braindive_figure_and_tables(recon):
    folder, part, dom = recon["folder"], recon["part"], recon["dom"]
    uri = rfig.data_uri((folder / "braindive.png").read_bytes())
    assert f'<figure id="recon-1-braindive-fig"><img src="{uri}"' in part
    assert dom.ids.get("recon-1-braindive") == "h4" and "BrainDiVE: region V4" in part
    assert "fitted on 1,300 trials: train r 0.610, validation r 0.470" in part
    assert "guided − stimuli: 0.900, permutation p-value 0.001" in part
    headers = [r[1][0] for r in dom.rows if len(r) == 2 and r[0][0] == "images"]
    assert headers == ["predicted activation (mean ± sd)",
                       "ground-truth preferred feature (mean ± sd)"]
    two = [[c for c, _ in r] for r in dom.rows if len(r) == 2 and r[0][0] != "images"]
    assert two == [["guided", "1.200 ± 0.300 (n=8)"], ["unguided", "0.400 ± 0.200 (n=8)"],
                   ["stimuli", "0.300 ± 0.250 (n=8)"], ["guided", "0.800 ± 0.100 (n=8)"],
                   ["unguided", "0.500 ± 0.100 (n=8)"], ["stimuli", "0.450 ± 0.120 (n=8)"]]


def test_braindive_off_failed_or_without_figure(tmp_path):
    off = {**METRICS, "braindive": None, "grids": {}}
    failed = {**METRICS, "braindive": {"region": "FFA", "error": "no trained subject has a "
                                                                 "region 'FFA'"}, "grids": None}
    no_feature = copy.deepcopy(METRICS)
    del no_feature["braindive"]["feature"]
    folders = [_folder(tmp_path / "off", off), _folder(tmp_path / "failed", failed),
               _folder(tmp_path / "nofig", no_feature, skip=("braindive.png",))]
    write_report(tmp_path / "r.html", reconstruct=folders, thumbnails=False)
    text = (tmp_path / "r.html").read_text()
    part = _section(text, "reconstruction")
    assert "BrainDiVE was not run (braindive.scale is 0)" in part
    assert '<p class="error">no trained subject has a region &#x27;FFA&#x27;</p>' in part
    assert f"BrainDiVE figure: {tmp_path / 'nofig' / 'braindive.png'} is missing" in part
    assert "ground-truth preferred feature" not in part
    assert "guided − stimuli: 0.900" in part  # the third folder still has its numbers
    assert [i for i in _Dom(text).ids if i.endswith("-grids")] == ["recon-3-grids"]


def test_grid_names_outside_the_folder_are_not_read(tmp_path):
    (tmp_path / "secret.png").write_bytes(_grid(0))
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "fake.png").write_text("not a png")
    data = {**METRICS, "braindive": None,
            "grids": {"01": "../secret.png", "02": "fake.png"}}
    (tmp_path / "sim" / "metrics.json").write_text(json.dumps(data))
    write_report(tmp_path / "r.html", reconstruct=[tmp_path / "sim"], thumbnails=False)
    part = _section((tmp_path / "r.html").read_text(), "reconstruction")
    assert "grid 01: &#x27;../secret.png&#x27; is not a file name in" in part
    assert f"grid 02: {tmp_path / 'sim' / 'fake.png'} is not a PNG image" in part
    assert "<img" not in part


def test_bad_folders_name_the_file(tmp_path):
    folder = _folder(tmp_path / "sim", METRICS)
    where = folder / "metrics.json"
    row = METRICS["rows"][0]
    for content, match in (
        ("{nope", r"not valid JSON .*line 1"),
        (json.dumps([1, 2]), r"no 'rows' list \(not a reconstruct folder\)"),
        (json.dumps({"analysis": "x"}), r"no 'rows' list \(not a reconstruct folder\)"),
        (json.dumps({"rows": [row, {"subject": "02"}]}), r"rows\[1\] has no 'kind', 'methods'"),
        (json.dumps({"rows": [{**row, "methods": {"reconstruction": 0.4}}]}),
         r"rows\[0\]\.methods must map each method to a mapping"),
        (json.dumps({"rows": [{**row, "chance": 0.5}]}), r"rows\[0\]\.chance must be a mapping"),
        (json.dumps({"rows": [row], "braindive": [1]}),
         r"'braindive' must be a mapping or null, got list"),
        (json.dumps({"rows": [row], "grids": ["grid_01.png"]}),
         r"'grids' must be a mapping or null, got list"),
    ):
        where.write_text(content)
        with pytest.raises(ReportError, match=r"sim/metrics\.json: " + match):
            load_reconstruction(folder)
    where.unlink()
    with pytest.raises(ReportError, match=r"sim: not a reconstruct folder \(no metrics\.json"):
        load_reconstruction(folder)
    # through the stage: the stage's error names the file, no report is left behind
    where.write_text("{nope")
    with pytest.raises(StageError, match=r"stage report: .*sim/metrics\.json: not valid JSON"):
        run_stage("report", {}, {"reconstruct": [folder]}, {"report": tmp_path / "s.html"})
    assert not (tmp_path / "s.html").exists()


def test_other_sections_are_unchanged(tmp_path):
    decode = tmp_path / "metrics.json"
    decode.write_text(json.dumps({"analysis": "by hand", "metrics": {
        "accuracy": {"score": 0.75, "std": 0.1, "chance": 0.5, "p_value": 0.03}}}))
    folder = _folder(tmp_path / "sim", METRICS)
    write_report(tmp_path / "a.html", decode=[decode], thumbnails=False)
    write_report(tmp_path / "b.html", decode=[decode], reconstruct=[folder], thumbnails=False)
    a, b = (tmp_path / "a.html").read_text(), (tmp_path / "b.html").read_text()
    for sid, _ in SECTIONS:
        if sid not in ("reconstruction", "provenance"):
            assert _section(a, sid) == _section(b, sid), sid
    assert "no image reconstruction results in this run" in _section(a, "reconstruction")
    assert "no image reconstruction results in this run" not in b
    # the folder is an input of the provenance section, after the decode file
    prov = _section(b, "provenance")
    assert prov.index(str(decode)) < prov.index(f"reconstruct: <code>{folder}</code>")
