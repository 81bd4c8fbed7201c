"""The Export page's files: byte for byte what `selectllm export` writes, with the manifest (and, for Label
Studio, the labeling config) beside them."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectllm_core.pipeline import export_run
from selectllm_core.store import Store

EXPORT_MIME = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet",
               "labelstudio": "application/json", "zip": "application/zip", "config": "application/xml"}
FORMAT_LABELS = {"csv": "CSV (plain text)", "xlsx": "XLSX (Excel, LibreOffice)", "jsonl": "JSONL",
                 "parquet": "Parquet", "labelstudio": "Label Studio (tasks and config)"}
FORMAT_NOTES = {
    "csv": "A spreadsheet guesses the type of each CSV cell (007 opens as 7, 3/4 as a date): for Excel or "
           "LibreOffice choose XLSX.",
    "xlsx": "Every text is stored as text, so 007, 3/4 or =1+1 open exactly as written; cluster and subset stay "
            "numbers.",
    "labelstudio": "A task file (JSON) and its labeling config (XML).",
}
LABELSTUDIO_HOWTO = ("In Label Studio: Create project > Labeling setup > Code, paste the labeling config and save; "
                     "then Data Import, and drop the task file. Each task shows the instruction, its input and why "
                     "it was picked, and asks for the response.")


@dataclass(frozen=True)
class ExportFile:
    """One download: the data file (or a zip of batches, manifest and config), the manifest beside it and, for
    Label Studio, the labeling config."""

    name: str
    data: bytes
    mime: str
    manifest_name: str
    manifest: bytes
    config_name: str | None = None
    config: bytes | None = None

    def kind(self, fmt: str) -> str:
        """What the download button names: the format, or a zip of batches."""
        if self.name.endswith(".zip"):
            return "zip of batches"
        return "Label Studio" if fmt == "labelstudio" else fmt.upper()


def export_bytes(store: Store, run_id: str, *, fmt: str = "csv", which: str = "selected",
                 batch_size: int | None = None) -> ExportFile:
    """What the Export page serves: `pipeline.export_run` into a temp folder, read back byte for byte.

    A single file is served as written (the same bytes `selectllm export` writes); batches come as one zip
    holding every batch file, the manifest and the Label Studio config.
    """
    with tempfile.TemporaryDirectory() as tmp:
        res = export_run(store, run_id, Path(tmp), fmt=fmt, which=which, batch_size=batch_size, record=False)
        manifest = res.manifest_path.read_bytes()
        config = {} if res.config_path is None else {"config_name": res.config_path.name,
                                                     "config": res.config_path.read_bytes()}
        if len(res.files) == 1:
            only = res.files[0]
            return ExportFile(only.name, only.read_bytes(), EXPORT_MIME[fmt], res.manifest_path.name, manifest,
                              **config)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [*res.files, res.manifest_path, *([res.config_path] if res.config_path else [])]:
                zf.write(path, path.name)
        return ExportFile(f"selectllm-{run_id}-{fmt}-batches.zip", buffer.getvalue(), EXPORT_MIME["zip"],
                          res.manifest_path.name, manifest, **config)


def row_choices(picks: pd.DataFrame) -> dict[str, str]:
    """The Rows choice of the Export page, each with how many picks it holds (`which` -> label)."""
    counts = picks["decision"].value_counts()
    return {"accepted": f"Accepted picks ({counts.get('accepted', 0)})",
            "selected": f"Every pick not rejected ({len(picks) - counts.get('rejected', 0)})",
            "all": f"All picks, with their decisions ({len(picks)})"}


def cli_command(run_id: str, *, fmt: str, which: str, batch_size: int | None = None) -> str:
    """The `selectllm export` command that writes the same file."""
    batch = f" --batch-size {batch_size}" if batch_size else ""
    return f"selectllm export {run_id} --out DIR --format {fmt} --which {which}{batch}"
