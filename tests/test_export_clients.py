"""Exports as their clients take them: XLSX in openpyxl and in LibreOffice Calc, the Label Studio config and
tasks against Label Studio's rules and, with the `labelstudio` marker, in a real Label Studio server.

LibreOffice tests open the export headlessly and save it as flat ODS (``.fods``), whose XML names the type of
every cell (``office:value-type="string"``, ``"float"``, ``"date"``, ...) and any formula; they are skipped
where LibreOffice is missing (``apt-get install -y --no-install-recommends libreoffice-calc``).
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from browser_support import REPO, free_port
from click.testing import CliRunner
from fakes import ScriptedBackend

from selectllm_core.cli import main
from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import ExportError
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.runs import export
from selectllm_core.runs.export import (
    XLSX_CELL_LIMIT,
    export_frame,
    labelstudio_config,
    restore_formulas,
    write_export,
)
from selectllm_core.store import Store
from selectllm_core.studio.download import export_bytes

RUN = "run-clients"
LONG_TEXT = ("A long instruction, sentence after sentence. " * 800)[:XLSX_CELL_LIMIT]
# the cells a spreadsheet likes to "recognise": dates, numbers, booleans, times, formulas, currencies
AWKWARD = [
    "3/4", "007", "1e5", "TRUE", "FALSE", "=1+1", "+1", "-2", "@SUM(A1)", "1,5", "0x1F", "12:30", "2024-01-02",
    "1.0", "NaN", "inf", "  lead space", "trail space  ", "line one\nline two", "Résumé 世界 🙂 — naïve", "%50",
    "50%", "$5", "(1)", "1/2/3", "1 1/2", "null", "'quoted", "\ttab first", "<b>bold</b>", "http://example.com",
    LONG_TEXT,
]
NUMERIC = ("cluster", "subset")
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice is not installed (apt-get install -y --no-install-recommends libreoffice-calc)")


def _awkward_selection() -> pd.DataFrame:
    """Every awkward value in each text column (ids too, and an extra column), numbers in cluster and subset."""
    n = len(AWKWARD)
    return pd.DataFrame({
        "id": [f"{i:03d}" for i in range(n)],
        "instruction": AWKWARD,
        "input": AWKWARD[::-1],
        "cluster": [i % 4 for i in range(n)],
        "subset": [i // 5 for i in range(n)],
        "reason": AWKWARD[1:] + AWKWARD[:1],
        "note": AWKWARD[2:] + AWKWARD[:2],
    })


# ---------------------------------------------------------------- XLSX, read back by openpyxl


def test_xlsx_stores_every_text_cell_as_the_same_text(tmp_path: Path) -> None:
    selection = _awkward_selection()
    path = write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}).files[0]
    sheet = openpyxl.load_workbook(path).active
    expected = export_frame(selection, run_id=RUN)
    header = [cell.value for cell in sheet[1]]
    assert header == list(expected.columns) and sheet.max_row == len(expected) + 1
    for row, want in zip(sheet.iter_rows(min_row=2), expected.to_dict("records")):
        for cell, column in zip(row, header):
            kind = "n" if column in NUMERIC else "s"  # real integers stay numbers; all else is a string cell
            assert (cell.data_type, cell.value) == (kind, want[column]), (column, want["id"])
    with zipfile.ZipFile(path) as zf:
        assert "<f>" not in zf.read("xl/worksheets/sheet1.xml").decode()  # not one formula in the file


def test_xlsx_header_is_bold_frozen_and_filterable(tmp_path: Path) -> None:
    path = write_export(_awkward_selection(), out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}).files[0]
    sheet = openpyxl.load_workbook(path)["selection"]
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.b
    assert sheet.auto_filter.ref == f"A1:I{len(AWKWARD) + 1}"
    widths = {col: sheet.column_dimensions[col].width for col in "ABG"}
    assert widths["A"] < 10 < widths["G"] and widths["B"] > 60  # ids narrow, texts wide (wrapped)


def test_xlsx_keeps_real_numbers_and_booleans_and_writes_what_a_sheet_cannot_hold_as_text(tmp_path: Path) -> None:
    selection = pd.DataFrame({"id": ["a", "b"], "instruction": ["x", "y"], "cluster": [3.0, None],
                              "score": [-0.25, float("inf")], "flag": [True, False], "big": [2**53, 2**53 + 1],
                              "tags": [["t1", "t2"], {"k": 1}]})
    path = write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}).files[0]
    sheet = openpyxl.load_workbook(path).active
    rows = [[(c.data_type, c.value) for c in row] for row in sheet.iter_rows(min_row=2)]
    header = [c.value for c in sheet[1]]
    got = {name: [row[header.index(name)] for row in rows] for name in ("cluster", "score", "flag", "big", "tags")}
    assert got["cluster"] == [("n", 3), ("n", None)]  # a missing label is an empty cell
    assert got["score"] == [("n", -0.25), ("s", "inf")]
    assert got["flag"] == [("b", True), ("b", False)]
    assert got["big"] == [("n", 2**53), ("s", str(2**53 + 1))]  # a spreadsheet number would round it
    assert got["tags"] == [("s", '["t1", "t2"]'), ("s", '{"k": 1}')]


@pytest.mark.parametrize(("text", "fits"), [
    ("x" * XLSX_CELL_LIMIT, True),
    ("x" * (XLSX_CELL_LIMIT + 1), False),
    ("🙂" * (XLSX_CELL_LIMIT // 2) + "x", True),  # an emoji is two UTF-16 units, as Excel counts
    ("🙂" * (XLSX_CELL_LIMIT // 2 + 1), False),
])
def test_xlsx_keeps_a_full_cell_whole_and_refuses_a_longer_one(tmp_path: Path, text: str, fits: bool) -> None:
    selection = pd.DataFrame({"id": ["a", "b"], "instruction": ["short", "short"], "input": ["", text]})
    if fits:
        path = write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}).files[0]
        assert openpyxl.load_workbook(path).active["C3"].value == text
        return
    with pytest.raises(ExportError, match=r"row id 'b', column 'input' holds [\d,]+ characters, more than the "
                                          r"32,767 an XLSX cell can hold; XLSX export never cuts text"):
        write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={})
    assert list(tmp_path.iterdir()) == []


def test_xlsx_refuses_more_rows_than_a_sheet_holds_and_batches_fit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 6)  # a sheet of 5 rows and the header, instead of 1,048,576
    selection = _awkward_selection().head(8)
    with pytest.raises(ExportError, match="8 rows do not fit one XLSX sheet .at most 5.; pass a batch size"):
        write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={})
    assert list(tmp_path.iterdir()) == []
    result = write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}, batch_size=5)
    assert [openpyxl.load_workbook(f).active.max_row for f in result.files] == [6, 4]


# ---------------------------------------------------------------- XLSX and CSV, opened by LibreOffice Calc

_NS = {"table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
       "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
       "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0"}


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{_NS[prefix]}}}{local}"


def _paragraph(p: ET.Element) -> str:
    """The text of one ODF paragraph: runs of spaces, tabs and line breaks are elements."""
    parts = [p.text or ""]
    for child in p:
        if child.tag == _q("text:s"):
            parts.append(" " * int(child.get(_q("text:c"), "1")))
        elif child.tag == _q("text:tab"):
            parts.append("\t")
        elif child.tag == _q("text:line-break"):
            parts.append("\n")
        else:
            parts.append(_paragraph(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _calc(path: Path, tmp_path: Path, *, rows: int, infilter: str | None = None) -> list[list[dict]]:
    """Open a file in LibreOffice Calc (headless), save it as flat ODS; the first rows as cells of
    {"type": office:value-type or None, "text": what the cell shows, "value": office:value, "formula": ...}."""
    profile = (tmp_path / "lo-profile").as_uri()  # its own profile: parallel runs do not share a lock
    command = [SOFFICE, f"-env:UserInstallation={profile}", "--headless", "--norestore"]
    command += [f"--infilter={infilter}"] if infilter else []
    outdir = tmp_path / "calc"
    done = subprocess.run([*command, "--convert-to", "fods", "--outdir", str(outdir), str(path)],
                          capture_output=True, text=True, timeout=300)
    fods = outdir / f"{path.stem}.fods"
    assert fods.exists(), f"LibreOffice did not convert {path.name}: {done.stdout} {done.stderr}"
    table = ET.parse(fods).getroot().find(".//table:table", _NS)
    out = []
    for row in table.iter(_q("table:table-row")):
        cells = []
        for cell in row.findall("table:table-cell", _NS):
            repeat = min(int(cell.get(_q("table:number-columns-repeated"), "1")), 64)
            cells += [{"type": cell.get(_q("office:value-type")), "value": cell.get(_q("office:value")),
                       "formula": cell.get(_q("table:formula")),
                       "text": "\n".join(_paragraph(p) for p in cell.findall("text:p", _NS))}] * repeat
        out.append(cells)
        if len(out) == rows:
            break
    return out


@needs_soffice
def test_libreoffice_opens_every_xlsx_text_cell_as_the_same_text(tmp_path: Path) -> None:
    selection = _awkward_selection()
    path = write_export(selection, out=tmp_path / "picks.xlsx", run_id=RUN, manifest={}).files[0]
    expected = export_frame(selection, run_id=RUN)
    header, *rows = _calc(path, tmp_path, rows=len(expected) + 1)
    assert [c["text"] for c in header[:len(expected.columns)]] == list(expected.columns)
    changed, formulas = [], 0
    for cells, want in zip(rows, expected.to_dict("records"), strict=True):
        for cell, column in zip(cells, expected.columns):
            formulas += cell["formula"] is not None
            if column in NUMERIC:
                assert cell["type"] == "float" and float(cell["value"]) == want[column]
            elif (cell["type"], cell["text"]) != ("string", want[column]):
                changed.append((column, want[column][:20], cell["type"], cell["text"][:20]))
    assert formulas == 0
    assert changed == []  # 7 columns x 32 awkward values, every one the very same string


@needs_soffice
@pytest.mark.parametrize(("special_numbers", "must_change"), [
    (False, {"007", "1e5", "1.0", "2024-01-02"}),
    (True, {"3/4", "007", "1e5", "TRUE", "FALSE", "12:30", "2024-01-02", "$5", "(1)", "50%"}),
])
def test_the_same_cells_as_csv_change_type_in_libreoffice(tmp_path: Path, special_numbers: bool,
                                                          must_change: set[str]) -> None:
    """Why XLSX exists: Calc guesses CSV cell types ("Detect special numbers" is a choice of its import dialog)."""
    selection = _awkward_selection()
    path = write_export(selection, out=tmp_path / "picks.csv", run_id=RUN, manifest={}).files[0]
    infilter = f"CSV:44,34,76,1,,1033,false,{str(special_numbers).lower()}"  # comma, '"', UTF-8, en-US
    header, *rows = _calc(path, tmp_path, rows=len(AWKWARD) + 1, infilter=infilter)
    column = [c["text"] for c in header].index("instruction")
    cells = [row[column] for row in rows]
    changed = {value for value, cell in zip(AWKWARD, cells, strict=True) if cell["type"] != "string"}
    assert must_change <= changed
    ids = [row[[c["text"] for c in header].index("id")] for row in rows]
    assert [(c["type"], c["text"]) for c in ids[6:8]] == [("float", "6"), ("float", "7")]  # "006", "007"
    assert not any(cell["formula"] for row in rows for cell in row)  # the apostrophe rule holds in Calc
    shown = pd.DataFrame({"cell": [c["text"] for c in cells]})
    assert restore_formulas(shown)["cell"][AWKWARD.index("=1+1")] == "=1+1"  # Calc shows "'=1+1"


# ---------------------------------------------------------------- Label Studio: config and tasks

OBJECT_TAGS = {"Text", "HyperText", "Paragraphs"}  # show task data
CONTROL_TAGS = {"TextArea", "Choices", "Labels", "Rating"}  # ask for an annotation
VISUAL_TAGS = {"View", "Header", "Style"}


def _labelstudio_problems(config: str, tasks: list[dict]) -> list[str]:
    """Label Studio's structural rules (its schema and `validate_label_config`), with the standard library:
    a View root, known tags, unique names, each toName an object tag's name, each ``$key`` in every task."""
    root = ET.fromstring(config)
    problems = [] if root.tag == "View" else [f"root is <{root.tag}>, not <View>"]
    names = [el.get("name") for el in root.iter() if el.get("name")]
    problems += [f"name {n!r} is not unique" for n in sorted({n for n in names if names.count(n) > 1})]
    objects = {el.get("name") for el in root.iter() if el.tag in OBJECT_TAGS}
    for el in root.iter():
        if el.tag not in OBJECT_TAGS | CONTROL_TAGS | VISUAL_TAGS:
            problems.append(f"unknown tag <{el.tag}>")
        if el.tag in OBJECT_TAGS | CONTROL_TAGS and not el.get("name"):
            problems.append(f"<{el.tag}> has no name")
        if el.tag in OBJECT_TAGS:
            key = (el.get("value") or "").removeprefix("$")
            if not (el.get("value") or "").startswith("$") or any(key not in t["data"] for t in tasks):
                problems.append(f"<{el.tag} value={el.get('value')!r}> names no key of every task's data")
        if el.tag in CONTROL_TAGS:
            problems += [f"<{el.tag} toName={to!r}> names no object tag"
                         for to in (el.get("toName") or "").split(",") if to not in objects]
    return problems


def test_labelstudio_export_writes_a_config_that_fits_its_tasks(tmp_path: Path) -> None:
    result = write_export(_awkward_selection(), out=tmp_path, fmt="labelstudio", run_id=RUN, manifest={})
    config = tmp_path / f"selectllm-{RUN}.labelstudio.xml"
    assert result.config_path == config and config.read_text(encoding="utf-8") == labelstudio_config()
    tasks = json.loads(result.files[0].read_text(encoding="utf-8"))
    assert _labelstudio_problems(config.read_text(encoding="utf-8"), tasks) == []
    root = ET.fromstring(labelstudio_config())
    shown = [el.get("value") for el in root.iter("Text")]
    assert shown[:3] == ["$instruction", "$input", "$reason"]
    response = root.find("TextArea")
    assert response.get("name") == "response" and response.get("toName") == "instruction"
    facts = json.loads(result.manifest_path.read_text(encoding="utf-8"))["export"]["labelstudio"]
    assert facts["config"] == config.name
    assert facts["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert "Labeling setup > Code" in facts["setup"]


def test_the_labelstudio_check_catches_a_broken_config() -> None:
    tasks = [{"data": {"instruction": "x"}}]
    broken = ('<View><Text name="instruction" value="$instructions"/><Text name="instruction" value="$instruction"/>'
              '<TextArea name="response" toName="instuction"/><Audio name="a" value="$a"/></View>')
    assert _labelstudio_problems(broken, tasks) == [
        "name 'instruction' is not unique",
        "<Text value='$instructions'> names no key of every task's data",
        "<TextArea toName='instuction'> names no object tag",
        "unknown tag <Audio>",
    ]


def test_labelstudio_batches_share_one_config(tmp_path: Path) -> None:
    result = write_export(_awkward_selection(), out=tmp_path / "tasks.json", run_id=RUN, manifest={},
                          batch_size=10)
    assert len(result.files) == 4 and result.config_path == tmp_path / "tasks.labelstudio.xml"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("tasks-batch")) == [
        "tasks.labelstudio.xml", "tasks.manifest.json"]


# ---------------------------------------------------------------- the CLI and the Export page


@pytest.mark.parametrize("fmt", ["xlsx", "labelstudio"])
def test_the_cli_writes_what_the_export_page_serves(tmp_path: Path, fake_embedder: object, fmt: str) -> None:
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(30)
    pool = load_pool(frame, name="demo slice")
    store = Store()
    store.save_pool(pool)
    run_id = run(pool, RunConfig(budget=3, subset_size=10), store=store, backend=ScriptedBackend(),
                 embedder=fake_embedder, cache=EmbeddingCache()).run_id
    served = export_bytes(store, run_id, fmt=fmt)
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["export", run_id, "--out", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert (out / served.name).read_bytes() == served.data
    assert (out / served.manifest_name).exists()
    if fmt == "labelstudio":
        assert served.config == (out / served.config_name).read_bytes() == labelstudio_config().encode()
    else:
        assert served.config is None and served.mime.endswith("spreadsheetml.sheet")


def _download_labels(at: object) -> list[str]:
    """The labels of the page's download buttons, in order."""
    return [button.proto.label for button in at.get("download_button")]


def test_the_export_page_offers_the_labeling_config_and_says_how_to_use_it(
        tmp_path: Path, fake_embedder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(REPO))  # the app's own modules live beside app.py
    from app_pages import _shared

    st.cache_data.clear()
    st.cache_resource.clear()
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(30)
    pool = load_pool(frame, name="demo slice")
    store = Store()
    store.save_pool(pool)
    run(pool, RunConfig(budget=3, subset_size=10), store=store, backend=ScriptedBackend(), embedder=fake_embedder,
        cache=EmbeddingCache())
    monkeypatch.setattr(_shared, "embedder", lambda: fake_embedder)
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    at.switch_page("app_pages/export.py").run()
    assert _download_labels(at) == ["Download CSV (3 rows)", "Download the manifest"]
    at.selectbox(key="export_format").select("xlsx").run()
    assert not at.exception, at.exception
    assert _download_labels(at) == ["Download XLSX (3 rows)", "Download the manifest"]
    assert "007, 3/4 or =1+1 open exactly as written" in " ".join(c.value for c in at.caption)
    at.selectbox(key="export_format").select("labelstudio").run()
    assert _download_labels(at) == ["Download Label Studio (3 rows)", "Download the labeling config (XML)",
                        "Download the manifest"]
    assert "Create project > Labeling setup > Code" in at.info[0].value


# ---------------------------------------------------------------- Label Studio: a real server (optional)

LABEL_STUDIO = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
LS_START = 600  # seconds: the first start migrates a new database


class _LabelStudio:
    """A client of a Label Studio server: a session login, then a personal access token as Bearer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.access = ""

    def login(self, email: str, password: str) -> None:
        self.opener.open(f"{self.url}/user/login/", timeout=60).read()
        form = urllib.parse.urlencode({"email": email, "password": password, "csrfmiddlewaretoken": self._csrf()})
        self.opener.open(urllib.request.Request(f"{self.url}/user/login/", data=form.encode(),
                                                headers={"Referer": f"{self.url}/user/login/"}), timeout=60).read()
        refresh = self.call("POST", "/api/token/", session=True)["token"]  # a personal access token
        self.access = self.call("POST", "/api/token/refresh", {"refresh": refresh})["access"]

    def call(self, method: str, path: str, body: dict | None = None, *, data: bytes | None = None,
             content_type: str = "application/json", session: bool = False) -> dict | list:
        headers = {"Content-Type": content_type}
        if session:
            headers |= {"X-CSRFToken": self._csrf(), "Referer": self.url}
        else:
            headers["Authorization"] = f"Bearer {self.access}"
        payload = data if data is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=payload, method=method, headers=headers)
        opener = self.opener if session else urllib.request.build_opener()
        try:
            with opener.open(request, timeout=120) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc

    def _csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")


def _multipart(name: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """One file as multipart/form-data, the way the Data Import dialog uploads it."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def label_studio(tmp_path: Path):  # noqa: ANN201
    """`label-studio start` on a free port with a new data folder and a user from environment variables."""
    if LABEL_STUDIO is None:
        pytest.skip("Label Studio is not installed: pip install -r requirements-labelstudio.txt into a venv of its "
                    "own and set LABEL_STUDIO_BIN to its label-studio")
    port, data = free_port(), tmp_path / "ls-data"
    user = {"email": "curator@example.com", "password": "curator-password-1"}
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_USERNAME": user["email"],
           "LABEL_STUDIO_PASSWORD": user["password"], "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    log = (tmp_path / "label-studio.log").open("w")
    proc = subprocess.Popen([LABEL_STUDIO, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LS_START
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("Label Studio did not start: " + (tmp_path / "label-studio.log").read_text()[-3000:])
        client = _LabelStudio(url)
        client.login(user["email"], user["password"])
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        proc.wait(timeout=60)
        log.close()


@pytest.mark.labelstudio
def test_label_studio_takes_our_config_and_task_file_unchanged(tmp_path: Path, label_studio: _LabelStudio) -> None:
    result = write_export(_awkward_selection(), out=tmp_path / "tasks.json", run_id=RUN, manifest={})
    ours = json.loads(result.files[0].read_text(encoding="utf-8"))

    # 1. the config, as a curator pastes it under Labeling setup > Code (the server validates it)
    project = label_studio.call("POST", "/api/projects", {"title": "SelectLLM picks",
                                                         "label_config": result.config_path.read_text()})
    assert project["parsed_label_config"]["response"]["type"] == "TextArea"
    assert project["parsed_label_config"]["response"]["to_name"] == ["instruction"]
    assert project["parsed_label_config"]["response"]["inputs"] == [
        {"type": "Text", "valueType": None, "value": "instruction"}]
    broken = labelstudio_config().replace('toName="instruction"', 'toName="instructions"')
    with pytest.raises(AssertionError, match="400"):  # the server does check what it is given
        label_studio.call("POST", "/api/projects", {"title": "broken", "label_config": broken})

    # 2. the task file, uploaded as written
    body, content_type = _multipart("file", result.files[0].name, result.files[0].read_bytes())
    imported = label_studio.call("POST", f"/api/projects/{project['id']}/import", data=body,
                                 content_type=content_type)
    assert imported["task_count"] == len(ours)

    # 3. every task arrived with its data and meta, in order
    listed = label_studio.call("GET", f"/api/tasks?project={project['id']}&page_size=1000&fields=all")
    tasks = sorted(listed["tasks"] if isinstance(listed, dict) else listed, key=lambda t: t["id"])
    assert [t["data"] for t in tasks] == [t["data"] for t in ours]
    assert [t["meta"] for t in tasks] == [t["meta"] for t in ours]
