"""all-MiniLM-L6-v2 quantised to int8 for ONNX Runtime: the same model, about 2.4x faster on a CPU, near-exact.

Built once per cache folder, offline, from the packaged model folder into `<cache folder>/models/<model_id>/`:
the transformer is exported to ONNX (torch's TorchScript exporter), quantised dynamically (weights int8 per
channel and symmetric, activations uint8 per forward pass: optimum's AutoQuantizationConfig settings, applied
with ONNX Runtime's own `quantize_dynamic`), checked in a child process against the fp32 export, and renamed
into place. Encoding is the model's own pipeline (word pieces truncated at 256, mean pooling, L2 norm), one text
per forward pass so that a text's vector never depends on the texts beside it (see OnnxMiniLM).

Near-exact: on the 14,652 real instructions of the benchmarks, its vectors are 0.996 cosine-similar to
MiniLM's (min 0.990) and 91 % of each row's 10 nearest neighbours are MiniLM's (overlap@10 0.908; the bar for
"near-exact" is 0.9). For that, each layer's FFN output projection stays in fp32 (KEEP_FP32): quantising those
six MatMuls too, as optimum does, is 1.4x faster still but reached only 0.87, approximate (benchmarks/README.md).

Why not sentence-transformers' `backend="onnx"`: it needs optimum-onnx, whose only release pins
transformers < 4.58 (we pin 5.23); ONNX Runtime alone does the same work.

The quantisation config follows the CPU. ONNX Runtime picks its kernels from what the CPU reports, and its
uint8 x int8 kernel is exact only with VNNI (`vpdpbusd`); without VNNI it multiplies through `vpmaddubsw`,
which can saturate, so the portable config quantises weights to uint8 (optimum's `avx2`). A machine can report
instruction sets it cannot run, so the check runs the model in a child process: when the chosen config dies
there (SIGILL) or disagrees with fp32, the build says so, records it, and falls back to the portable config.
Speed and agreement with MiniLM: benchmarks/README.md, "int8 MiniLM".

Its `model_id` names the config and never equals MiniLM's, so the embedding cache never mixes their vectors.

    from selectllm_core.embed.int8 import Int8Embedder
    embed_texts(texts, embedder=Int8Embedder())        # builds the model on first use
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from selectllm_core.embed.cache import default_cache_dir
from selectllm_core.embed.minilm import BUNDLED_MODEL, bundled_model_path
from selectllm_core.errors import ConfigError

INT8_NAMES = ("minilm-int8", "int8")
PORTABLE = "portable"
# config -> (ONNX Runtime weight type, what it is for). Activations are uint8 in every config (dynamic mode).
CONFIGS = {
    "vnni": ("QInt8", "x86 with AVX512-VNNI or AVX-VNNI: uint8 x int8 through vpdpbusd (optimum's avx512_vnni)"),
    "arm64": ("QInt8", "ARM64: uint8 x int8 (optimum's arm64)"),
    PORTABLE: ("QUInt8", "any x86: uint8 x uint8, no saturation without VNNI (optimum's avx2)"),
}
# Node names (suffixes) left in fp32: each layer's FFN output projection (optimum quantises every MatMul and
# Gather; that measured overlap@10 0.87 against 0.91 with these six in fp32). RECIPE names the choice in ids.
KEEP_FP32: tuple[str, ...] = tuple(f"layer.{i}/output/dense/MatMul" for i in range(6))
RECIPE = "ffn-fp32"
CHECK_TEXTS = tuple(f"### Instruction: {t}\n\n### Response:" for t in (
    "Give three tips for staying healthy.", "Translate 'good morning' into French.",
    "Summarise the causes of the French Revolution in two sentences, for a ten-year-old.",
    "Write a haiku about autumn rain on a tin roof.", "What is the capital of Australia?",
    "Classify each as a fruit or a vegetable: carrot, apple, broccoli, mango, spinach, plum. " * 30,
))
MIN_COSINE = 0.95  # of the check texts, int8 vs fp32; measured on real instructions: min 0.990, mean 0.996


def int8_model_id(config: str) -> str:
    """Cache id of the int8 model built with one config (and RECIPE): never equal to MiniLM's."""
    return f"{BUNDLED_MODEL}-onnx-int8-{RECIPE}-{config}"


def cpu_report() -> tuple[str, frozenset[str]]:
    """The machine type and the CPU flags the kernel reports (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
            break
    return platform.machine().lower(), frozenset(flags)


def choose_config(machine: str, flags: frozenset[str]) -> tuple[str, str]:
    """The quantisation config for what the CPU reports, and why (the child-process check confirms it runs)."""
    if machine in ("arm64", "aarch64"):
        return "arm64", "the CPU is ARM64"
    vnni = sorted({"avx512_vnni", "avx_vnni"} & flags)
    if vnni:
        return "vnni", f"the CPU reports {', '.join(vnni)}"
    return PORTABLE, "the CPU reports no VNNI" if flags else "the CPU's instruction sets are not known here"


class CheckFailed(Exception):
    """The quantised model did not run, or disagreed with fp32, in the child process (message: what happened)."""


@dataclass(frozen=True)
class Check:
    """Cosine of the int8 vectors to the fp32 export's on CHECK_TEXTS, computed in a child process."""

    mean: float
    min: float


def cpu_threads() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxMiniLM:
    """An exported MiniLM folder run by ONNX Runtime: word pieces, transformer, mean pooling, L2 norm.

    Each text runs alone (batch_size=None): dynamic quantisation scales a forward pass's activations
    together, padding included, so in a batch a row's int8 vector depends on the rows beside it (two batchings
    of the same texts differed as much as int8 from fp32: benchmarks/README.md). Alone, a text always gets the
    same vector, which the cache and a resumed run rely on, and nothing is padded; `threads` texts run at once,
    one ONNX Runtime thread each, which measured faster than batches of 64 on two threads.
    """

    def __init__(self, folder: Path, *, model_file: str = "model.onnx", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("The int8 embedder needs onnxruntime: run `pip install -r requirements.txt`, or "
                              "use all-MiniLM-L6-v2 (leave the embedding model option out).") from None
        meta = json.loads((folder / "sentence_bert_config.json").read_text())
        self.threads = threads or cpu_threads()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # the file ships with truncation at 128 and padding to 128; the model reads 256 word pieces, and _run pads
        self.tokenizer.enable_truncation(int(meta.get("max_seq_length", 256)))
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self._ort, self._file = ort, str(folder / model_file)
        self._sessions: dict[bool, Any] = {}

    def _session(self, one: bool) -> Any:
        """One text per call: one ONNX Runtime thread per session call, `threads` calls at once; batches: all
        threads on each batch. Made on first use."""
        if one not in self._sessions:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = 1 if one else self.threads
            self._sessions[one] = self._ort.InferenceSession(self._file, options, providers=["CPUExecutionProvider"])
        return self._sessions[one]

    def _run(self, session: Any, pieces: Sequence[Any]) -> np.ndarray:
        """Unit vectors of a list of tokenised texts (padded to the longest) in one forward pass."""
        ids = np.full((len(pieces), max(len(p.ids) for p in pieces)), self.pad_id, np.int64)
        mask = np.zeros_like(ids)
        for row, piece in enumerate(pieces):
            ids[row, : len(piece.ids)], mask[row, : len(piece.ids)] = piece.ids, 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Unit float32 vectors in input order: each text alone (None), or in batches cut longest first."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        pieces = self.tokenizer.encode_batch(list(texts))
        if batch_size is None:
            session = self._session(True)
            with ThreadPoolExecutor(self.threads) as pool:
                return np.concatenate(list(pool.map(lambda p: self._run(session, [p]), pieces)))
        session, out = self._session(False), [np.empty((0, 0), np.float32)] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            for row, vector in zip(rows, self._run(session, [pieces[i] for i in rows])):
                out[row] = vector
        return np.stack(out)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantiser's expected warnings (tracing notes, "consider pre-processing")."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(source: str, path: Path) -> Path:
    """The model's transformer as fp32 ONNX: (input_ids, attention_mask, token_type_ids) -> last hidden state."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with _quiet(), torch.no_grad():
        # the TorchScript exporter (dynamo=False): the dynamo one needs onnxscript and gives the same graph here
        torch.onnx.export(Hidden(model), dummy, str(path), dynamo=False, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17)
    return path


def quantize(fp32: Path, out: Path, *, config: str, keep_fp32: Sequence[str] = KEEP_FP32) -> Path:
    """Dynamic int8 quantisation of an exported model with one of CONFIGS (optimum's settings)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    excluded = [n.name for n in load_model_with_shape_infer(fp32).graph.node if n.name.endswith(tuple(keep_fp32))] \
        if keep_fp32 else []
    with _quiet():
        quantize_dynamic(fp32, out, per_channel=True, reduce_range=False,
                         weight_type=getattr(QuantType, CONFIGS[config][0]),
                         op_types_to_quantize=list(IntegerOpsRegistry), nodes_to_exclude=excluded,
                         extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out


def check_in_child(folder: Path, fp32_file: Path) -> Check:
    """Run the int8 and fp32 models of a folder on CHECK_TEXTS in a child process; raise CheckFailed if it dies
    or disagrees (a CPU can report instruction sets its virtual machine cannot run)."""
    code = ("import json, sys; from pathlib import Path; from selectllm_core.embed.int8 import _child_check; "
            "print(json.dumps(_child_check(Path(sys.argv[1]), sys.argv[2])))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", code, str(folder), fp32_file.name], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        why = " (an instruction this CPU reports but cannot run)" if name == "SIGILL" else ""
        raise CheckFailed(f"the model's test run died with {name}{why}")
    if done.returncode != 0:
        raise CheckFailed("the model's test run failed: " + (done.stderr.strip().splitlines() or ["no output"])[-1])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    check = Check(mean=found["mean"], min=found["min"])
    if check.min < MIN_COSINE:
        raise CheckFailed(f"its vectors disagree with fp32 (cosine min {check.min:.3f}, needed {MIN_COSINE})")
    return check


def _child_check(folder: Path, fp32_name: str) -> dict[str, float]:
    """In the child: cosine of int8 to fp32 vectors on CHECK_TEXTS."""
    int8 = OnnxMiniLM(folder, threads=1).encode(CHECK_TEXTS)
    fp32 = OnnxMiniLM(folder, model_file=fp32_name, threads=1).encode(CHECK_TEXTS)
    cosine = (int8 * fp32).sum(axis=1)
    return {"mean": float(cosine.mean()), "min": float(cosine.min())}


def build_int8(source: str, out_dir: Path, *, config: str) -> Check:
    """Export, quantise and check the model in a temporary folder, then rename it to out_dir.

    Args:
        source: local folder of the sentence-transformers model (mean pooling; no model hub is contacted).
        out_dir: where the int8 model goes.
        config: one of CONFIGS.

    Returns:
        The check's cosines. Raises CheckFailed (nothing is left at out_dir) when the check fails.
    """
    pooling = json.loads((Path(source) / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ConfigError(f"The int8 embedder supports mean-pooling models only; {Path(source).name} is not one.")
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in ("tokenizer.json", "sentence_bert_config.json"):
            shutil.copy2(Path(source) / name, tmp / name)
        fp32 = export_onnx(source, tmp / "fp32.onnx")
        quantize(fp32, tmp / "model.onnx", config=config)
        check = check_in_child(tmp, fp32)
        fp32.unlink()
        record = {"config": config, "weights": CONFIGS[config][0], "recipe": RECIPE, "keep_fp32": list(KEEP_FP32),
                  "check_cosine": {"mean": check.mean, "min": check.min}, "machine": cpu_report()[0]}
        (tmp / "int8.json").write_text(json.dumps(record, indent=1))
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / "model.onnx").is_file():  # else another process finished the same build first
                raise
        return check
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Int8Embedder:
    """all-MiniLM-L6-v2 in int8 on ONNX Runtime; builds itself on first use, for the config this CPU runs.

    Args:
        root: folder of built models (default: `<cache folder>/models`).
        config: one of CONFIGS; None chooses from what the CPU reports, or the portable config when the
            chosen one failed its check here before (recorded in root).
        threads: texts encoded at once, one ONNX Runtime thread each (None: the CPUs this process may use).
    """

    def __init__(self, root: str | Path | None = None, *, config: str | None = None,
                 threads: int | None = None) -> None:
        if config is not None and config not in CONFIGS:
            raise ConfigError(f"Unknown int8 config {config!r}: choose one of {', '.join(CONFIGS)}.")
        self.root = Path(root) if root is not None else default_cache_dir() / "models"
        self.threads = threads
        self.config, self.why = (config, "asked for") if config else choose_config(*cpu_report())
        failed = self._failure(self.config)
        if config is None and failed:
            self.config, self.why = PORTABLE, f"{int8_model_id(self.config)} failed here before: {failed}"
        self._model: OnnxMiniLM | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return int8_model_id(self.config)

    @property
    def model_dir(self) -> Path:
        return self.root / self.model_id

    @property
    def built(self) -> bool:
        """True when the int8 model for the current config is on disk."""
        return (self.model_dir / "model.onnx").is_file()

    def _failure(self, config: str) -> str | None:
        """Why a config failed its check with this cache folder before (None: it never did)."""
        path = self.root / f"{int8_model_id(config)}.failed.json"
        return json.loads(path.read_text())["reason"] if path.is_file() else None

    def _build(self) -> None:
        """Build the current config; on a failed check fall back to the portable config, saying so."""
        source = bundled_model_path()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            build_int8(source, self.model_dir, config=self.config)
            return
        except CheckFailed as exc:
            if self.config == PORTABLE:
                raise ConfigError(f"ONNX Runtime cannot run the int8 embedding model on this machine: {exc}. "
                                  "Use all-MiniLM-L6-v2 (leave the embedding model option out).") from None
            failed, reason = self.config, str(exc)
        record = self.root / f"{int8_model_id(failed)}.failed.json"
        tmp = record.with_name(f"{record.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps({"reason": reason, "why_chosen": self.why}))
        tmp.replace(record)  # whole or absent, so a later start never reads half a record
        message = (f"The int8 embedding model for {failed} ({self.why}) did not pass its check: {reason}. "
                   f"Using the portable config instead ({int8_model_id(PORTABLE)}, slower on this CPU).")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.config, self.why = PORTABLE, f"{int8_model_id(failed)} failed here: {reason}"
        if not self.built:
            self._build()

    def _load(self) -> OnnxMiniLM:
        with self._lock:
            if self._model is None:
                if not self.built:
                    self._build()
                self._model = OnnxMiniLM(self.model_dir, threads=self.threads)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as unit float32 vectors (the model_id may change on the first call: see _build)."""
        return self._load().encode(list(texts))  # one text per forward pass: see OnnxMiniLM
