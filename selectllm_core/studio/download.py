"""The Export page's files: byte for byte what `selectllm export` writes, with the manifest beside them."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectllm_core.pipeline import export_run
from selectllm_core.store import Store

EXPORT_MIME = {"csv": "text/csv", "jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet",
               "labelstudio": "application/json", "zip": "application/zip"}
FORMAT_LABELS = {"csv": "CSV (opens in Excel and Sheets)", "jsonl": "JSONL", "parquet": "Parquet",
                 "labelstudio": "Label Studio tasks (JSON)"}


@dataclass(frozen=True)
class ExportFile:
    """One download: the data file (or a zip of batches and manifest) and the manifest beside it."""

    name: str
    data: bytes
    mime: str
    manifest_name: str
    manifest: bytes

    def kind(self, fmt: str) -> str:
        """What the download button names: the format, or a zip of batches."""
        if self.name.endswith(".zip"):
            return "zip of batches"
        return "Label Studio" if fmt == "labelstudio" else fmt.upper()


def export_bytes(store: Store, run_id: str, *, fmt: str = "csv", which: str = "selected",
                 batch_size: int | None = None) -> ExportFile:
    """What the Export page serves: `pipeline.export_run` into a temp folder, read back byte for byte.

    A single file is served as written (the same bytes `selectllm export` writes); batches come as one zip
    holding every batch file and the manifest.
    """
    with tempfile.TemporaryDirectory() as tmp:
        res = export_run(store, run_id, Path(tmp), fmt=fmt, which=which, batch_size=batch_size, record=False)
        manifest = res.manifest_path.read_bytes()
        if len(res.files) == 1:
            only = res.files[0]
            return ExportFile(only.name, only.read_bytes(), EXPORT_MIME[fmt], res.manifest_path.name, manifest)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [*res.files, res.manifest_path]:
                zf.write(path, path.name)
        return ExportFile(f"selectllm-{run_id}-{fmt}-batches.zip", buffer.getvalue(), EXPORT_MIME["zip"],
                          res.manifest_path.name, manifest)


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
