"""The HTML report and the ``report`` stage, on real inputs, rendered in headless Chromium.

The inputs are built as a workflow would: simulated stores written by the ``simulate`` stage,
``metrics.json`` files and an embed folder written through :func:`run_stage` by two small stages
defined here (ridge decoding with permutation chance levels, PCA embeddings), in the decode and
embed stages' formats, so every input has a provenance record.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from neurodecode.config import StageConfig
from neurodecode.pipelines import (
    STAGES,
    Slot,
    Stage,
    StageError,
    read_provenance,
    register,
    run_stage,
)
from neurodecode.pipelines.fingerprints import fingerprint
from neurodecode.report import SECTIONS, ReportError, load_metrics, write_report
from neurodecode.report import figures as rfig
from neurodecode.store import find_recordings, open_recording

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NASTY = 'pos<i>x</i> & "y" <script>alert(1)</script>'


# --------------------------------------------------------------------------------------------
# two small stages writing the decode and embed formats (real numbers, through run_stage)


class _DecodeConfig(StageConfig):
    analysis: str
    subject: str
    modality: str = "calcium"
    n_permutations: int = 19


class _OneThread(Stage):
    """A stage whose BLAS calls use one thread (small fits on a busy 2-core machine)."""

    def run(self, config: Any, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.compute(config, inputs, outputs)


class _TestDecode(_OneThread):
    """Ridge decoding of position from one subject's recording, chance by permutations."""

    name = "test-report-decode"
    Config = _DecodeConfig
    inputs = {"stores": Slot("a folder of stores")}
    outputs = {"metrics": Slot("metrics.json")}

    def compute(self, config: Any, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]):
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import KFold, cross_validate, permutation_test_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        store = _store(inputs["stores"][0], config.subject, config.modality)
        ds = open_recording(store)
        X = np.asarray(ds["signal"].values, dtype=np.float64)
        y = np.asarray(ds["behavior_position"].values, dtype=np.float64)
        est = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
        cv = KFold(5)
        scoring = {"r2": "r2", "neg_mae": "neg_mean_absolute_error"}
        res = cross_validate(est, X, y, cv=cv, scoring=scoring)
        metrics = {}
        for name, scorer in scoring.items():
            score, null, p = permutation_test_score(
                est, X, y, cv=cv, scoring=scorer, n_permutations=config.n_permutations,
                random_state=0,
            )  # fmt: skip
            metrics[name] = {"score": float(score), "std": float(res[f"test_{name}"].std()),
                             "chance": float(null.mean()), "p_value": float(p)}  # fmt: skip
        folds = [
            {"fold": i, "n_train": len(tr), "n_test": len(te),
             **{m: float(res[f"test_{m}"][i]) for m in scoring}}
            for i, (tr, te) in enumerate(cv.split(X))
        ]  # fmt: skip
        data = {
            "analysis": config.analysis, "description": "ridge <b>decoding</b> of position",
            "recordings": [os.path.abspath(store)],
            "samples": {"kind": "time_samples"}, "n_samples": len(y), "classes": None,
            "estimator": repr(est), "estimator_name": "ridge", "cv": repr(cv), "n_splits": 5,
            "n_permutations": config.n_permutations, "permutation": "global",
            "metrics": metrics, "folds": folds, "confusion": None, "seconds": 0.0,
        }  # fmt: skip
        outputs["metrics"].write_text(json.dumps(data))
        return {"analysis": config.analysis}


class _EmbedConfig(StageConfig):
    modality: str = "calcium"
    output_dimension: int = 3


class _TestEmbed(_OneThread):
    """PCA embeddings per recording, position decoding from them, linear consistency."""

    name = "test-report-embed"
    Config = _EmbedConfig
    inputs = {"stores": Slot("a folder of stores")}
    outputs = {"embedding": Slot("embed folder")}

    def compute(self, config: Any, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LinearRegression, Ridge
        from sklearn.model_selection import KFold, permutation_test_score

        out = outputs["embedding"]
        for sub in ("embeddings", "figures"):
            (out / sub).mkdir(parents=True)
        stores = [p for p in find_recordings(inputs["stores"][0]) if p.parts[-2] == config.modality]
        recs, embs, ratios = [], [], []
        for store in stores:
            ds = open_recording(store)
            x = np.asarray(ds["signal"].values, dtype=np.float64)
            pca = PCA(config.output_dimension, random_state=0).fit(x)
            emb = pca.transform(x).astype(np.float32)
            behavior = np.column_stack(
                [ds["behavior_position"].values, ds["behavior_speed"].values]
            )
            rid = os.path.abspath(store)
            safe = f"sub-{ds.attrs['subject']}_{config.modality}"
            np.savez(out / "embeddings" / f"{safe}.npz", embedding=emb,
                     time=ds["time"].values, behavior=behavior,
                     behavior_names=np.array(["position", "speed"]))  # fmt: skip
            score, null, p = permutation_test_score(
                Ridge(1.0), emb, behavior[:, 0], cv=KFold(5), n_permutations=19, random_state=0
            )
            recs.append({
                "id": rid, "subject": str(ds.attrs["subject"]), "modality": config.modality,
                "n_samples": len(emb), "behavior": ["position", "speed"],
                "decoding": {"r2": {"score": float(score), "chance": float(null.mean()),
                                    "p_value": float(p)}},
            })  # fmt: skip
            embs.append(emb)
            ratios.append(pca.explained_variance_ratio_)
        n = min(len(e) for e in embs)
        matrix = [[float(LinearRegression().fit(a[:n], b[:n]).score(a[:n], b[:n]))
                   for b in embs] for a in embs]  # fmt: skip
        fig = Figure(figsize=(4, 3))
        ax = fig.subplots()
        for r, rec in zip(ratios, recs, strict=True):
            ax.plot(np.arange(1, len(r) + 1), r, marker="o", label=f"sub-{rec['subject']}")
        ax.legend()
        fig.savefig(out / "figures" / "explained_variance.png", dpi=50)
        summary = {
            "recordings": recs,
            "consistency": {"labels": [r["id"] for r in recs], "matrix": matrix},
            "model": {"output_dimension": config.output_dimension, "n_iter": 0, "kind": "pca"},
            "figures": ["figures/explained_variance.png"],
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return {"recordings": len(recs)}


def _store(folder: Path, subject: str, modality: str) -> Path:
    for p in find_recordings(folder):
        if p.parts[-2] == modality and p.parts[-4] == f"sub-{subject}":
            return p
    raise AssertionError(f"no {modality} store of sub-{subject} in {folder}")


# --------------------------------------------------------------------------------------------
# a small DOM


class _Dom(HTMLParser):
    """Element ids, links, images, tags and table rows (cell texts) of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, str] = {}
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: set[str] = set()
        self.rows: list[list[str]] = []
        self.cell_links: list[list[list[str]]] = []
        self.h2: list[str] = []
        self.text: list[str] = []
        self._stack: list[str] = []
        self._cell: list[str] | None = None
        self._links: list[str] = []
        self._h2: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids[a["id"]] = tag
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
            if self._cell is not None:
                self._links.append(a["href"])
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "tr":
            self.rows.append([])
            self.cell_links.append([])
        if tag in ("td", "th"):
            self._cell, self._links = [], []
        elif tag in ("div", "br", "details") and self._cell is not None:
            self._cell.append(" ")  # block breaks separate words
        if tag == "h2":
            self._h2 = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self.cell_links[-1].append(self._links)
            self._cell = None
        if tag == "h2" and self._h2 is not None:
            self.h2.append("".join(self._h2).strip())
            self._h2 = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._h2 is not None:
            self._h2.append(data)

    def row_with(self, *cells: str) -> tuple[list[str], list[list[str]]]:
        """The first row holding ``cells`` in this order (and its links per cell)."""
        for row, links in zip(self.rows, self.cell_links, strict=True):
            try:
                start = row.index(cells[0])
            except ValueError:
                continue
            if row[start : start + len(cells)] == list(cells):
                return row, links
        raise AssertionError(f"no table row with {cells}")


def _num(x: float) -> str:
    """A score as the report writes it: 3 decimals, or 3 significant digits below 0.001."""
    return f"{x:.3f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


def _png(uri: str) -> np.ndarray:
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        return np.asarray(img.convert("RGB"))


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Stores, two metrics files and an embed folder, all written through ``run_stage``."""
    root = tmp_path_factory.mktemp("report_run")
    for cls in (_TestDecode, _TestEmbed):
        register(cls)
    try:
        stores = root / "stores" / "sim"
        run_stage("simulate", {"n_subjects": 2, "duration": 20.0, "n_images": None,
                               "modalities": ["eeg", "fmri", "calcium"]},
                  {}, {"stores": stores}, job="simulate")  # fmt: skip
        metrics = []
        for subject, name in (("01", NASTY), ("02", "sim_position_sub-02")):
            out = root / "decode" / f"sub-{subject}" / "metrics.json"
            run_stage("test-report-decode", {"analysis": name, "subject": subject},
                      {"stores": stores}, {"metrics": out}, job=f"decode-{subject}")  # fmt: skip
            metrics.append(out)
        embed = root / "embed" / "sim"
        run_stage("test-report-embed", {}, {"stores": stores}, {"embedding": embed}, job="embed")
        yield {"root": root, "stores": stores, "metrics": metrics, "embed": embed}
    finally:
        for cls in (_TestDecode, _TestEmbed):
            STAGES.pop(cls.name, None)


@pytest.fixture(scope="module")
def report(run_dir):
    """The report of that run, written by the report stage."""
    path = run_dir["root"] / "report" / "report.html"
    jobs = run_dir["root"] / "jobs.json"
    jobs.write_text(json.dumps({"jobs": [
        {"job": "simulate", "stage": "simulate", "status": "ran", "reason": "new", "seconds": 5.1},
        {"job": "decode-01", "stage": "decode", "status": "skipped", "reason": "up to date",
         "seconds": 0.01},
        {"job": "<evil>", "stage": "embed", "status": "failed", "reason": "input changed: a&b",
         "seconds": None},
    ]}))  # fmt: skip
    record = run_stage(
        "report",
        {"title": "Run <report> & more"},
        {"stores": [run_dir["stores"]], "decode": run_dir["metrics"], "embed": [run_dir["embed"]],
         "jobs": jobs},
        {"report": path},
        job="report",
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    return {"path": path, "text": text, "dom": _Dom(text), "record": record, "jobs": jobs}


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    return exe


def _browse(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90, check=True,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# tests


@pytest.mark.slow
def test_dom_has_every_section_recording_and_score(run_dir, report):
    dom = report["dom"]
    for sid, name in SECTIONS:
        assert dom.ids.get(sid) == "section", sid
        assert name in dom.h2
        assert f"#{sid}" in dom.hrefs  # the navigation bar
    # every recording: its store path in the table, its row and its thumbnail
    stores = find_recordings(run_dir["stores"])
    assert len(stores) == 6
    names = {row[1].split(" sub-")[0] for row in dom.rows if len(row) == 9}
    for store in stores:
        assert f"sim/{store.relative_to(run_dir['stores']).as_posix()}" in names
    thumbs = [i for i in dom.ids if i.startswith("thumb-")]
    assert len(thumbs) == len(stores)
    # every metric of every metrics file: score ± std, chance and p-value side by side
    for path in run_dir["metrics"]:
        data = json.loads(path.read_text())
        anchor = next(
            i for i, tag in dom.ids.items()
            if tag == "article" and i.startswith("prov-") and
            _article_mentions(report["text"], i, str(path))
        )  # fmt: skip
        for metric, m in data["metrics"].items():
            row, links = dom.row_with(
                metric,
                f"{_num(m['score'])} ± {_num(m['std'])}",
                _num(m["chance"]),
                f"{m['p_value']:.3g}",
            )
            start = row.index(metric)
            for cell_links in links[start + 1 : start + 4]:  # every number links to provenance
                assert cell_links and set(cell_links) == {f"#{anchor}"}
    # the embed folder's per-recording scores with chance and p-value
    summary = json.loads((run_dir["embed"] / "summary.json").read_text())
    for rec in summary["recordings"]:
        r2 = rec["decoding"]["r2"]
        dom.row_with("r2", _num(r2["score"]), _num(r2["chance"]), f"{r2['p_value']:.3g}")
    # every link lands on an element of the page; no script, no external resource
    for href in dom.hrefs:
        assert href.startswith("#") and href[1:] in dom.ids, href
    assert "script" not in dom.tags
    assert all(src.startswith("data:image/png;base64,") for src in dom.srcs)
    assert "http://" not in report["text"] and "https://" not in report["text"]
    # strings from the data are escaped, not interpreted
    assert NASTY in "".join(dom.text)
    assert "i" not in dom.tags and "b" not in dom.tags
    assert "Run <report> & more" in "".join(dom.text)
    # the workflow table of the jobs file
    dom.row_with("<evil>", "embed", "failed", "input changed: a&b")
    dom.row_with("decode-01", "decode", "skipped", "up to date")


def _article_mentions(text: str, anchor: str, needle: str) -> bool:
    start = text.index(f'id="{anchor}"')
    end = text.find("<article", start + 1)
    return needle in text[start : end if end > 0 else len(text)]


@pytest.mark.slow
def test_provenance_of_every_input(run_dir, report):
    text, dom = report["text"], report["dom"]
    articles = [i for i, tag in dom.ids.items() if tag == "article"]
    assert len(articles) == 1 + len(run_dir["metrics"]) + 1
    stage_of = {str(run_dir["stores"]): "simulate", str(run_dir["embed"]): "test-report-embed",
                **{str(p): "test-report-decode" for p in run_dir["metrics"]}}  # fmt: skip
    for anchor in articles:
        start = text.index(f'id="{anchor}"')
        end = text.find("<article", start + 1)
        chunk = text[start : end if end > 0 else len(text)]
        path = next(p for p in stage_of if f"<code>{p}</code>" in chunk)
        record = read_provenance(path)
        assert record is not None and record["stage"] == stage_of[path]
        assert f"<dd>{record['stage']}</dd>" in chunk and f"<dd>{record['job']}</dd>" in chunk
        for items in record["inputs"].values():
            for item in items:  # input paths and fingerprints
                assert item["fingerprint"] in chunk
        for key, value in record["config"].items():  # the config as JSON
            assert html.escape(json.dumps(value, sort_keys=True)) in chunk, key
        assert record["started"] in chunk and record["host"] in chunk
    # a decode job's input (the stores folder) links to the stores' own entry
    stores_anchor = next(a for a in articles if f"<code>{run_dir['stores']}</code>" in
                         text[text.index(f'id="{a}"') :].split("<article", 1)[0])  # fmt: skip
    assert text.count(f'href="#{stores_anchor}">{run_dir["stores"]}</a>') >= 3


def test_inputs_without_provenance_are_listed(tmp_path):
    data = {
        "analysis": "by hand",
        "metrics": {"accuracy": {"score": 0.75, "std": 0.1, "chance": 0.5, "p_value": 0.03}},
    }
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(data))
    out = write_report(tmp_path / "r.html", decode=[metrics], thumbnails=False)
    text = (tmp_path / "r.html").read_text()
    dom = _Dom(text)
    assert out["analyses"] == 1 and out["scores"] == 1
    assert "no provenance (not written by a stage)" in text
    dom.row_with("accuracy", "0.750 ± 0.100", "0.500", "0.03")
    # empty sections say so instead of disappearing
    for thing in ("recordings", "embeddings", "workflow jobs"):
        assert f"no {thing} in this run" in text
    assert all(dom.ids.get(sid) == "section" for sid, _ in SECTIONS)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    url = report["path"].resolve().as_uri()
    dumped = _browse(exe, tmp_path, "--dump-dom", url).stdout
    dom = _Dom(dumped)
    for sid, name in SECTIONS:
        assert dom.ids.get(sid) == "section", f"section {sid} missing from the rendered DOM"
        assert name in dom.h2
    assert len(dom.srcs) == len(report["dom"].srcs) >= 6 + 1 + 3
    shot = tmp_path / "shot.png"
    _browse(exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert pixels.std() > 25, "the screenshot is blank"
    assert len(colours) > 500, f"only {len(colours)} colours: the figures were not drawn"


@pytest.mark.slow
def test_figures_are_plots_of_the_data(run_dir, report):
    dom, text = report["dom"], report["text"]
    # thumbnails: one per recording, each different
    thumbs = [
        src for src in dom.srcs
        if any(f'<figure id="{t}"><img src="{src}"' in text for t in dom.ids if "thumb" in t)
    ]  # fmt: skip
    assert len(thumbs) == 6
    images = [_png(uri) for uri in thumbs]
    assert len({im.tobytes() for im in images}) == 6
    assert all(im.std() > 20 for im in images)
    # two recordings of the same modality are drawn differently (the plot is of their data)
    eeg = [_store(run_dir["stores"], s, "eeg") for s in ("01", "02")]
    a, b = (_png(rfig.data_uri(rfig.recording_thumbnail(p))) for p in eeg)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
    # the same recording with other samples gives another picture
    ds = open_recording(eeg[0]).load()
    flipped = ds.assign(signal=-ds["signal"])
    c = _png(rfig.data_uri(rfig.recording_thumbnail(flipped)))
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.5
    # the decoding chart embedded is the chart of the metrics files' numbers
    rows = []
    for path in run_dir["metrics"]:
        data = json.loads(path.read_text())
        rows += [{"label": data["analysis"], "metric": k, **v} for k, v in data["metrics"].items()]
    chart = rfig.data_uri(rfig.decoding_chart(rows))
    assert f'<figure id="decoding-chart"><img src="{chart}"' in text
    moved = [dict(r, score=r["score"] + 0.3) for r in rows]
    assert rfig.decoding_chart(moved) != rfig.decoding_chart(rows)
    # the embed stage's figure is embedded byte for byte; the scatter and heatmap are there
    own = (run_dir["embed"] / "figures" / "explained_variance.png").read_bytes()
    assert rfig.data_uri(own) in dom.srcs
    assert "emb-1-consistency" in dom.ids
    panels = []  # the scatter is of the npz files' embeddings, coloured by the first behaviour
    for npz in sorted((run_dir["embed"] / "embeddings").glob("*.npz")):
        with np.load(npz) as z:
            panels.append({"title": npz.stem, "embedding": z["embedding"],
                           "color": z["behavior"][:, 0], "color_name": "position"})  # fmt: skip
    assert len(panels) == 2
    scatter = rfig.data_uri(rfig.embedding_scatter(panels))
    assert f'<figure id="emb-1-scatter"><img src="{scatter}"' in text
    panels[1]["color"] = panels[1]["color"][::-1]
    assert rfig.data_uri(rfig.embedding_scatter(panels)) != scatter
    summary = json.loads((run_dir["embed"] / "summary.json").read_text())
    matrix = np.asarray(summary["consistency"]["matrix"])
    for value in matrix.ravel():
        assert f">{value:.2f}</a></td>" in text


@pytest.mark.slow
def test_report_stage_is_atomic_with_provenance(run_dir, report):
    path = report["path"]
    record = read_provenance(path)
    assert record is not None and record["stage"] == "report" and record["job"] == "report"
    assert record["outputs"]["report"]["fingerprint"] == fingerprint(path)
    assert record["config"]["title"] == "Run <report> & more"
    got = {role: [i["path"] for i in items] for role, items in record["inputs"].items()}
    assert got["decode"] == [str(p) for p in run_dir["metrics"]]
    assert got["stores"] == [str(run_dir["stores"])] and got["jobs"] == [str(report["jobs"])]
    summary = record["summary"]
    assert summary["recordings"] == 6 and summary["analyses"] == 2 and summary["scores"] == 4
    assert summary["embeddings"] == 1 and summary["jobs"] == 3 and summary["unreadable"] == 0
    assert summary["bytes"] == path.stat().st_size
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    before = path.read_bytes()
    # a broken input: a clear error naming the file; the old report is left as it was
    bad = run_dir["root"] / "bad" / "metrics.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text('{"analysis": "x", "metrics": {"r2": {"std": 1}}}')
    with pytest.raises(StageError, match=r"stage report: .*metrics\.json: metrics\.r2 has no"):
        run_stage("report", {}, {"decode": [bad]}, {"report": path})
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    # a missing input, a folder given as a metrics file, an unknown parameter
    with pytest.raises(StageError, match=r"input 'decode' .*nope\.json does not exist"):
        run_stage("report", {}, {"decode": [run_dir["root"] / "nope.json"]}, {"report": path})
    with pytest.raises(StageError, match=r"is a folder; the decode input takes"):
        run_stage("report", {}, {"decode": [run_dir["embed"]]}, {"report": path})
    with pytest.raises(StageError, match=r"stage report: unknown parameter 'titel'"):
        run_stage("report", {"titel": "x"}, {}, {"report": path})
    with pytest.raises(StageError, match=r"not an embed folder"):
        run_stage("report", {}, {"embed": run_dir["metrics"][:1]}, {"report": path})
    with pytest.raises(StageError, match=r"holds no recording store|no recording store below"):
        run_stage("report", {}, {"stores": [run_dir["embed"]]}, {"report": path})


def test_bad_inputs_name_the_file(tmp_path):
    broken = tmp_path / "metrics.json"
    broken.write_text("{not json")
    with pytest.raises(ReportError, match=r"metrics\.json: not valid JSON .*line 1"):
        load_metrics(broken)
    broken.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ReportError, match=r"no 'analysis' key"):
        load_metrics(broken)
    embed = tmp_path / "embed"
    (embed / "embeddings").mkdir(parents=True)
    (embed / "summary.json").write_text(
        json.dumps({"recordings": [], "consistency": {"labels": ["a", "b"], "matrix": [[1.0]]}})
    )
    with pytest.raises(ReportError, match=r"summary\.json: the consistency matrix has shape"):
        write_report(tmp_path / "r.html", embed=[embed])
    with pytest.raises(ReportError, match=r"the workflow job table must be a list"):
        write_report(tmp_path / "r.html", workflow="job")  # type: ignore[arg-type]
    assert not (tmp_path / "r.html").exists()


def test_damaged_store_is_a_row_not_a_crash(tmp_path, recording):
    from neurodecode.store import write_recording

    good = tmp_path / "stores" / "a.zarr"
    bad = tmp_path / "stores" / "b.zarr"
    write_recording(recording, good)
    write_recording(recording.assign_attrs(subject="02"), bad)
    shutil.rmtree(bad / "signal")
    out = write_report(tmp_path / "r.html", stores=[tmp_path / "stores"])
    dom = _Dom((tmp_path / "r.html").read_text())
    assert out["recordings"] == 2 and out["unreadable"] == 1
    row = next(r for r in dom.rows if r and r[1].startswith("stores/b.zarr"))
    assert row[2].startswith("cannot be read:")
    assert len([s for s in dom.srcs if s.startswith("data:image/png")]) == 1  # a's thumbnail


def test_write_is_atomic(tmp_path, monkeypatch):
    import neurodecode.report.html as rhtml

    path = tmp_path / "r.html"
    write_report(path, title="first")
    before = path.read_bytes()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rhtml.os, "replace", disk_full)
    with pytest.raises(ReportError, match=r"r\.html: the report cannot be written \(No space"):
        write_report(path, title="second")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def _codebook_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A pretrain folder (a collapsed codebook) and a cross_subject folder fine-tuned from it,
    written by hand in the two stages' formats."""
    history = {
        "tokenizer": [{"epoch": 0, "recon_loss": 1.05, "val_loss": 0.98},
                      {"epoch": 1, "recon_loss": 0.97, "val_loss": 0.95, "perplexity": 3.5,
                       "dead_fraction": 0.8, "codes_used": 9},
                      {"epoch": 2, "recon_loss": 0.95, "val_loss": None, "perplexity": 1.2,
                       "dead_fraction": 0.95, "codes_used": 2}],
        "masked": [{"epoch": 0, "mask_accuracy": 0.4, "val_mask_accuracy": 0.5}],
    }  # fmt: skip
    pre = tmp_path / "pretrain" / "p"
    pre.mkdir(parents=True)
    (pre / "metrics.json").write_text(json.dumps({
        "analysis": "hand_codebook", "model": {"name": "codebook_seeg", "codebook_size": 64,
                                               "adapter": "subject_linear", "tokens": "fused"},
        "windows": {"length": 0.5, "stride": 0.25, "n_times": 125, "intervals": ["train"]},
        "subjects": {"01": {"n_train": 300, "n_val": 50, "n_channels": 17}},
        "scored_on": "validation", "health": {"perplexity": 1.31, "used": 2,
                                              "dead_fraction": 0.969, "codebook_size": 64,
                                              "collapsed": True},
        "reconstruction_r2": -0.0123, "mask_accuracy": {"accuracy": 0.812, "majority": 0.8},
        "segments_per_s": {"tokenizer": 4321.0, "masked": 1234.0},
        "epochs": {"tokenizer": 3, "masked": 1}, "history": history, "fit_seconds": 12.5,
    }))  # fmt: skip
    tuned = tmp_path / "models" / "m"
    tuned.mkdir(parents=True)
    result = {"score": 0.625, "chance": 0.498, "p_value": 0.02}
    (tuned / "metrics.json").write_text(json.dumps({
        "analysis": "hand_finetuned", "metric": "balanced_accuracy", "n_permutations": 100,
        "model": {"name": "codebook_seeg", "adapter": "subject_linear"},
        "subjects": {"01": {"n_train": 60, "n_val": 12, "n_test": 14, "n_channels": 17,
                            "shared": result, "baseline": {"name": "logistic", "score": 0.55},
                            "scratch": {"score": 0.4375, "chance": 0.502, "p_value": 0.7},
                            "probe": {"score": 0.6875, "chance": 0.49, "p_value": 0.01},
                            "test_in_pretraining": 3}},
        "mean": {"shared": 0.625, "chance": 0.498, "baseline": 0.55, "scratch": 0.4375,
                 "probe": 0.6875},
        "pretrained": {"path": str(pre), "test_samples_in_pretraining": 3},
        "probe": {"layer": "embed", "C": 0.1, "n_features": 640},
    }))  # fmt: skip
    return pre, tuned, history


def test_codebook_section_draws_the_health_and_compares_finetuned_with_scratch(tmp_path):
    from neurodecode.report import load_pretrain

    pre, tuned, history = _codebook_folders(tmp_path)
    out = write_report(tmp_path / "r.html", pretrain=[pre], cross_subject=[tuned],
                       thumbnails=False)
    assert out["pretrained"] == 1 and out["finetuned"] == 1 and out["models"] == 1
    text = (tmp_path / "r.html").read_text()
    dom = _Dom(text)
    assert dom.ids.get("codebook") == "section" and "Codebook pretraining" in dom.h2
    assert "#codebook" in dom.hrefs and "Codebook pretraining (2)" in "".join(dom.text)
    # the final health, a collapse shown as such, and the per-epoch curves of this history
    dom.row_with("1.3", "2 / 64", "0.969", "collapsed", "-0.012", "0.812", "0.800")
    assert '<td class="error">collapsed</td>' in text
    curves = rfig.data_uri(rfig.codebook_curves(history, codebook_size=64))
    assert f'<figure id="codebook-1-curves"><img src="{curves}"' in text
    history["tokenizer"][2]["perplexity"] = 40.0
    assert rfig.data_uri(rfig.codebook_curves(history, codebook_size=64)) != curves
    dom.row_with("01", "300 / 50", "17")
    # fine-tuned against scratch with both chance levels; the leak is flagged
    dom.row_with("01", "14", "0.625", "0.498", "0.02", "0.438", "0.502", "0.7", "0.688", "0.490",
                 "0.01", "0.550")
    dom.row_with("mean", "", "0.625", "0.498", "", "0.438", "", "", "0.688", "", "", "0.550")
    assert "Linear probe: a logistic regression on the frozen pretrained features (embed " \
           "tokens, C 0.100 chosen" in text
    assert "3 test samples lie in spans the pretraining windows covered" in text
    pre_anchor = next(a for a, tag in dom.ids.items() if tag == "article"
                      and f"<code>{pre}</code>" in text[text.index(f'id="{a}"'):][:400])
    assert f'href="#{pre_anchor}">' in text.split('id="finetuned-1"', 1)[1].split("</p>", 1)[0]
    bars = rfig.decoding_chart([
        {"label": "sub-01 fine-tuned", "metric": "balanced_accuracy", "score": 0.625,
         "chance": 0.498, "p_value": 0.02},
        {"label": "sub-01 scratch", "metric": "balanced_accuracy", "score": 0.4375,
         "chance": 0.502, "p_value": 0.7},
        {"label": "sub-01 probe", "metric": "balanced_accuracy", "score": 0.6875,
         "chance": 0.49, "p_value": 0.01}])  # fmt: skip
    assert f'<figure id="finetuned-1-bars"><img src="{rfig.data_uri(bars)}"' in text
    # nothing to show is said; a folder that is not a pretrain folder is named
    write_report(tmp_path / "e.html", thumbnails=False)
    assert "no codebook pretraining results in this run" in (tmp_path / "e.html").read_text()
    (pre / "metrics.json").write_text(json.dumps({"history": {}}))
    with pytest.raises(ReportError, match=r"p/metrics\.json: no 'health' mapping"):
        load_pretrain(pre)
    with pytest.raises(ReportError, match=r"not a pretrain folder \(no metrics\.json"):
        load_pretrain(tmp_path)
    with pytest.raises(ValueError, match="no codebook history"):
        rfig.codebook_curves({"tokenizer": [{"epoch": 0}]})


# --------------------------------------------------------------------------------------------
# spike-token pretraining and few-shot behaviour decoding (folders in the stages' formats)


def _spike_generation() -> dict[str, Any]:
    """A generation record as :func:`generation_stats` writes it, on small random trains."""
    from neurodecode.evaluate.spike_stats import generation_stats

    rng = np.random.default_rng(0)
    n_units, duration = 6, 20.0
    rates = rng.uniform(5.0, 20.0, n_units)
    real_u = np.repeat(np.arange(n_units), rng.poisson(rates * duration))
    gen_u = np.repeat(np.arange(n_units), rng.poisson(rates * duration * 0.9))
    real_t = rng.uniform(0.0, duration, len(real_u))
    gen_t = rng.uniform(0.0, duration, len(gen_u))
    stats = generation_stats(real_t, real_u, gen_t, gen_u, n_units, duration, bin_width=0.05)
    return {"split": "valid", **stats}


SPIKE_HISTORY = [{"epoch": 0, "train_nll": 3.4, "val_nll": 3.3},
                 {"epoch": 1, "train_nll": 3.1, "val_nll": None},
                 {"epoch": 2, "train_nll": 2.95, "val_nll": 2.98}]  # fmt: skip


def _spike_pretrain(folder: Path, *, analysis: str, generation: Any, connectivity: Any,
                    store: str = "/data/sim/sub-01/ses-01/spikes.zarr") -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "family": "spike_tokens", "analysis": analysis, "description": "GPT on <spikes>",
        "dataset": "sim",
        "model": {"name": "spike_gpt", "config": "config.yaml", "file": "pretrain.pt",
                  "width": 128, "layers": 4, "past_layers": 2, "parameters": 812345},
        "tokens": {"window": 0.05, "past": 0.15, "dt": 0.005, "stride": 0.05, "n_units": 40,
                   "intervals": ["train"], "n_train": 9000, "n_val": 1500, "n_heldout": 2000,
                   "behavior": ["position"]},
        "recordings": {store: {"subject": "01", "session": "01", "n_units": 40,
                               "n_windows": 10500}},
        "coverage": {store: [[0.0, 300.0], [320.0, 440.0]]},
        "next_token_nll": {"split": "valid", "n_windows": 2000, "n_spikes": 15000,
                           "model": 2.91, "poisson": 3.20, "constant": 3.45},
        "generation": generation, "connectivity": connectivity,
        "throughput": {"train_tokens_per_s": 21000.0, "tokenize_spikes_per_s": 7.1e6},
        "history": SPIKE_HISTORY, "epochs": 3, "seed": 0, "fit_seconds": 40.2, "seconds": 55.0,
    }))  # fmt: skip
    return folder


#: Few-shot scores of the finetune fixture: (variant, fraction, seed) -> score.
FEW_SHOT = {("pretrained", 0.01, 0): 0.21, ("pretrained", 0.01, 1): 0.25,
            ("pretrained", 0.1, 0): 0.41, ("pretrained", 0.1, 1): 0.42,
            ("pretrained", 1.0, 0): 0.55, ("scratch", 0.01, 0): 0.02, ("scratch", 0.1, 0): 0.2,
            ("scratch", 1.0, 0): 0.5, ("units", 0.1, 0): 0.3, ("ridge", 0.01, 0): 0.1,
            ("ridge", 0.1, 0): 0.38, ("ridge", 1.0, 0): 0.453, ("knn", 1.0, 0): 0.443}  # fmt: skip


def _finetune(folder: Path, pretrained: Path | None) -> Path:
    rows = [{"dataset": "sim", "variant": v, "fraction": f, "metric": "r2", "score": s,
             "chance": -0.02 + 0.001 * i, "p_value": 0.01 if s > 0.1 else 0.4,
             "baseline": 0.38, "baseline_name": "ridge", "n_labelled": int(4000 * f), "seed": seed}
            for i, ((v, f, seed), s) in enumerate(FEW_SHOT.items())]  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "family": "spike_tokens", "analysis": "sim_position", "description": "few <shot>",
        "dataset": "sim", "target": "position", "task": "regression", "metric": "r2",
        "pretrained": None if pretrained is None else {"path": str(pretrained),
                                                       "analysis": "sim_spikes"},
        "split": {"train": "train intervals", "test": "test intervals", "gap": 1.0,
                  "n_train": 4000, "n_test": 1000},
        "few_shot": rows, "seconds": 80.0,
    }))  # fmt: skip
    return folder


@pytest.fixture()
def spike_run(tmp_path):
    """Two spike-token pretrain folders (both generation layouts), a codebook one, a finetune."""
    gen_doc = {"split": "valid", "duration": 60.0,
               "rates": {"real_mean_hz": 8.1, "generated_mean_hz": 7.6, "correlation": 0.93},
               "isi": {"ks_pooled": 0.05, "cv_real": 1.02, "cv_generated": 0.98},
               "pairwise": {"correlation_of_correlations": 0.61, "bin_width": 0.01},
               "poisson_surrogate": {"rates": {"real_mean_hz": 8.1, "generated_mean_hz": 8.1,
                                               "correlation": 0.88},
                                     "isi": {"ks_pooled": 0.21, "cv_real": 1.02,
                                             "cv_generated": 1.0},
                                     "pairwise": {"correlation_of_correlations": 0.02,
                                                  "bin_width": 0.01}}}  # fmt: skip
    conn = {"auroc": 0.81, "chance_mean": 0.5, "chance_p95": 0.56, "p_value": 0.001,
            "n_edges": 120, "n_pairs": 1560}
    stats = _spike_generation()
    a = _spike_pretrain(tmp_path / "pretrain" / "glm", analysis="sim_spikes",
                        generation=stats, connectivity=conn)
    b = _spike_pretrain(tmp_path / "pretrain" / "rat", analysis="rat_spikes",
                        generation=gen_doc, connectivity=None)
    codebook, _, history = _codebook_folders(tmp_path / "cb")
    ft = _finetune(tmp_path / "finetune" / "sim", a)
    return {"glm": a, "rat": b, "codebook": codebook, "codebook_history": history,
            "finetune": ft, "stats": stats, "gen_doc": gen_doc, "conn": conn}


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}">')
    return text[start : text.index("</section>", start)]


def test_spike_pretraining_section(spike_run, tmp_path):
    r = spike_run
    out = write_report(tmp_path / "r.html", pretrain=[r["codebook"], r["glm"], r["rat"]],
                       thumbnails=False)
    assert out["pretrained"] == 3 and out["spike_pretrained"] == 2 and out["finetunes"] == 0
    text = (tmp_path / "r.html").read_text()
    dom = _Dom(text)
    assert dom.ids.get("spikes") == "section" and "Spike-token pretraining" in dom.h2
    assert "Spike-token pretraining (2)" in "".join(dom.text)
    assert "Codebook pretraining (1)" in "".join(dom.text)
    spikes, codebook = _section(text, "spikes"), _section(text, "codebook")
    # the codebook folder renders as before, in its own section only
    curves = rfig.data_uri(rfig.codebook_curves(r["codebook_history"], codebook_size=64))
    assert f'<figure id="codebook-1-curves"><img src="{curves}"' in codebook
    assert "hand_codebook" in codebook and "hand_codebook" not in spikes
    assert "sim_spikes" in spikes and "sim_spikes" not in codebook
    # settings, escaped description
    assert "GPT on <spikes>" in "".join(dom.text) and "<spikes>" not in text
    assert "width 128, 4 layers, 2 past layers, 812,345 parameters" in spikes
    assert "windows 50 ms every 50 ms, past 150 ms, dt 5 ms, 40 units" in spikes
    assert "9,000 / 1,500 / 2,000" in spikes and "7,100,000 spikes/s" in spikes
    # the per-epoch NLL curve of this history, with the held-out baselines dotted
    refs = {"inhomogeneous Poisson (held-out)": 3.20, "constant rate (held-out)": 3.45}
    nll = rfig.data_uri(rfig.nll_curve(SPIKE_HISTORY, references=refs))
    assert f'<figure id="spikes-1-nll"><img src="{nll}"' in spikes
    moved = [dict(h, val_nll=3.5) for h in SPIKE_HISTORY]
    assert rfig.data_uri(rfig.nll_curve(moved, references=refs)) != nll
    # held-out NLL: model against the baselines, lower is better, the lowest bold
    assert "nats per spike; lower is better" in spikes
    dom.row_with("model", "2.910", "")
    dom.row_with("inhomogeneous Poisson (rate-only baseline)", "3.200", "+0.290")
    dom.row_with("constant rate per unit", "3.450", "+0.540")
    assert spikes.count('<td class="num sig"><a href="#') >= 2  # model NLL, both folders
    # connectivity with its permutation chance; absent for the second folder
    dom.row_with("0.810", "0.500", "0.560", "0.001", "120 of 1,560 pairs")
    assert "not measured (no known connectivity" in spikes.split('id="spikes-2"', 1)[1]
    # generation (generation_stats layout): real / generated / surrogate side by side
    st = r["stats"]
    for key in ("mean_rate", "isi_cv", "mean_corr"):
        dom.row_with(key, _num(st["real"][key]), _num(st["generated"][key]),
                     _num(st["poisson_surrogate"][key]))
    dom.row_with("rate_corr", "", _num(st["generated"]["rate_corr"]),
                 _num(st["poisson_surrogate"]["rate_corr"]))
    dom.row_with("n_spikes", f"{st['real']['n_spikes']:,}", f"{st['generated']['n_spikes']:,}",
                 f"{st['poisson_surrogate']['n_spikes']:,}")
    assert "rates_real (6 values)" in spikes
    rates = rfig.data_uri(rfig.rate_scatter(st["rates_real"], st["rates_generated"]))
    assert f'<figure id="spikes-1-rates"><img src="{rates}"' in spikes
    # generation (nested layout): flattened keys, generated against the surrogate
    dom.row_with("rates.correlation", "0.930", "0.880")
    dom.row_with("isi.ks_pooled", "0.050", "0.210")
    dom.row_with("pairwise.correlation_of_correlations", "0.610", "0.020")
    assert "spikes-2-rates" not in dom.ids
    # the recordings trained on, with the time their windows cover
    dom.row_with("sim/sub-01/ses-01/spikes.zarr", "01", "01", "40", "10,500",
                 "2 spans, 7 min 0 s")
    # every link lands on the page
    for href in dom.hrefs:
        assert href.startswith("#") and href[1:] in dom.ids, href


def test_finetune_section_curve_and_rows(spike_run, tmp_path):
    r = spike_run
    record = run_stage("report", {"thumbnails": False},
                       {"pretrain": [r["glm"]], "finetune": [r["finetune"]]},
                       {"report": tmp_path / "r.html"})
    assert record["summary"]["finetunes"] == 1
    assert record["summary"]["finetune_rows"] == len(FEW_SHOT)
    text = (tmp_path / "r.html").read_text()
    dom = _Dom(text)
    assert dom.ids.get("finetune") == "section" and "Few-shot behaviour decoding" in dom.h2
    part = _section(text, "finetune")
    assert "few <shot>" in "".join(dom.text) and "<shot>" not in text
    assert "target position (regression)" in part and "gap 1.0 s" in part
    # the pretraining is linked to its part of the spike-token section
    assert f'href="#spikes-1" title="{r["glm"]}">sim_spikes</a>' in part
    assert dom.ids.get("spikes-1") == "h3"
    # every row: variant, fraction, labelled samples, score, chance, p-value, baseline, seed
    data = json.loads((r["finetune"] / "metrics.json").read_text())
    for row in data["few_shot"]:
        dom.row_with("sim", row["variant"], f"{100 * row['fraction']:g}%",
                     f"{row['n_labelled']:,}", "r2", _num(row["score"]), _num(row["chance"]),
                     f"{row['p_value']:.3g}", "0.380 ridge", str(row["seed"]))
    # the curve: mean over seeds per variant and fraction, baselines apart, chance dashed
    expected: dict[tuple[str, float], list[dict[str, float]]] = {}
    for row in data["few_shot"]:
        expected.setdefault((row["variant"], row["fraction"]), []).append(row)
    rows = [{"label": v, "fraction": f, "kind": "baseline" if v in ("ridge", "knn") else "adapt",
             "score": float(np.mean([x["score"] for x in items])),
             "chance": float(np.mean([x["chance"] for x in items]))}
            for (v, f), items in expected.items()]  # fmt: skip
    panels = [{"title": "sim · r2", "rows": rows}]
    kw = {"metric": "r2", "x": "fraction", "xlabel": "labelled fraction of the training time",
          "percent": True}
    curve = rfig.data_uri(rfig.fewshot_curve(panels, **kw))
    assert f'<figure id="ft-1-curve"><img src="{curve}"' in part
    rows[0]["score"] += 0.2
    assert rfig.data_uri(rfig.fewshot_curve(panels, **kw)) != curve
    # the target: pretrained with 10% of the labels against ridge with all
    assert ("sim: pretrained with 10% of the labels 0.415 against ridge with all of them "
            "0.453 — misses the target") in part


def test_spike_inputs_that_are_wrong_are_named(spike_run, tmp_path):
    from neurodecode.report import load_finetune, load_pretrain

    # nothing to show is said
    write_report(tmp_path / "e.html", thumbnails=False)
    empty = (tmp_path / "e.html").read_text()
    assert "no spike-token pretraining results in this run" in empty
    assert "no few-shot behaviour decoding results in this run" in empty
    pre = spike_run["rat"] / "metrics.json"
    good = json.loads(pre.read_text())

    def broken(change: dict[str, Any], match: str) -> None:
        pre.write_text(json.dumps({**good, **change}))
        with pytest.raises(ReportError, match=r"rat/metrics\.json: " + match):
            load_pretrain(spike_run["rat"])

    broken({"history": {"epoch": 0}}, r"no 'history' list of per-epoch records")
    broken({"next_token_nll": {"poisson": 3.2}}, r"no 'next_token_nll' mapping")
    broken({"connectivity": [0.8]}, r"'connectivity' must be a mapping or null, got list")
    broken({"connectivity": {"chance_mean": 0.5}}, r"'connectivity' has no 'auroc'")
    broken({"generation": "none"}, r"'generation' must be a mapping or null, got str")
    broken({"family": "lfp_tokens"}, r"unknown pretrain family 'lfp_tokens'")
    ft = spike_run["finetune"] / "metrics.json"
    rows = json.loads(ft.read_text())["few_shot"]
    for content, match in (
        ("{nope", r"not valid JSON .*line 1"),
        (json.dumps({"analysis": "x"}), r"no 'few_shot' list \(not a finetune folder\)"),
        (json.dumps({"few_shot": [rows[0], {"variant": "x"}]}),
         r"few_shot\[1\] has no 'dataset', 'fraction', 'metric', 'score', 'chance'"),
        (json.dumps({"few_shot": [{**rows[0], "fraction": "10%"}]}),
         r"few_shot\[0\]\.fraction must be a number in \(0, 1\], got '10%'"),
        (json.dumps({"few_shot": [{**rows[0], "fraction": 0}]}),
         r"few_shot\[0\]\.fraction must be a number in \(0, 1\], got 0"),
        (json.dumps({"few_shot": rows, "pretrained": "/x"}), r"'pretrained' must be a mapping"),
    ):
        ft.write_text(content)
        with pytest.raises(ReportError, match=r"sim/metrics\.json: " + match):
            load_finetune(spike_run["finetune"])
    with pytest.raises(ReportError, match=r"not a finetune folder \(no metrics\.json"):
        load_finetune(tmp_path)
    # through the stage: the stage's error names the file, no report is left behind
    with pytest.raises(StageError, match=r"stage report: .*sim/metrics\.json: 'pretrained'"):
        run_stage("report", {}, {"finetune": [spike_run["finetune"]]},
                  {"report": tmp_path / "s.html"})
    assert not (tmp_path / "s.html").exists()
    with pytest.raises(ValueError, match="no next-token NLL"):
        rfig.nll_curve([{"epoch": 0, "train_nll": None}])
    with pytest.raises(ValueError, match="3 real rates for 2 generated"):
        rfig.rate_scatter([1.0, 2.0, 3.0], [1.0, 2.0])


def test_spike_sections_render_in_headless_chromium(spike_run, tmp_path):
    exe = _chromium()
    path = tmp_path / "r.html"
    write_report(path, pretrain=[spike_run["glm"], spike_run["rat"]],
                 finetune=[spike_run["finetune"]], thumbnails=False)
    dom = _Dom(_browse(exe, tmp_path, "--dump-dom", path.resolve().as_uri()).stdout)
    for sid in ("spikes", "finetune"):
        assert dom.ids.get(sid) == "section"
    for fig in ("spikes-1-nll", "spikes-1-rates", "spikes-2-nll", "ft-1-curve"):
        assert dom.ids.get(fig) == "figure", fig
    assert len(dom.srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in dom.srcs)
