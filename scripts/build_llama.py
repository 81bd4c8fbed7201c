"""Build llama-cpp-python for the CPU this machine can actually run, once, and install it into the venv.

Why not llama.cpp's default `-march=native`: it trusts what the CPU reports. A virtual machine can report
instruction sets it cannot execute (seen: a CPU reporting AMX whose VM faulted on `tileloadd`, so every model
call died with SIGILL). Why not llama.cpp's runtime-dispatched variants (GGML_BACKEND_DL with
GGML_CPU_ALL_VARIANTS): they also choose by what the CPU reports, and they build every variant (several
times the five-minute build on two cores).

So this script asks the machine instead: it assembles one tiny program per instruction set, runs each in a
child process, and enables in llama.cpp (GGML_NATIVE=OFF) exactly the sets whose program ran. AMX is never
enabled: it needs a per-process permission from the kernel, helps only some quantisations on server CPUs, and
is the set seen to be reported without being runnable.

No rebuild when nothing changed: the build is keyed by the llama-cpp-python version, the CMake arguments,
the compiler and Python versions. The wheel is kept in a cache folder under that key, and a stamp file in
the venv records what is installed. A different CPU gives other arguments, so it gets its own build.

Usage: python scripts/build_llama.py VENV_PYTHON   (exit 0: installed or already up to date)
Override the chosen flags with SELECTLLM_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON ...".
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = "selectllm-llama-build.json"

# (ggml option, assembly that needs it, options it needs first). Assembled with no -m flags: inline asm
# needs only the assembler, so a probe runs exactly the instruction named and nothing the compiler chose.
PROBES: list[tuple[str, str, tuple[str, ...]]] = [
    ("GGML_SSE42", "crc32l %%eax, %%eax", ()),
    ("GGML_AVX", "vaddps %%ymm0, %%ymm0, %%ymm0", ("GGML_SSE42",)),
    ("GGML_F16C", "vcvtph2ps %%xmm0, %%ymm0", ("GGML_AVX",)),
    ("GGML_FMA", "vfmadd231ps %%ymm0, %%ymm0, %%ymm0", ("GGML_AVX",)),
    ("GGML_AVX2", "vpaddd %%ymm0, %%ymm0, %%ymm0", ("GGML_AVX", "GGML_FMA", "GGML_F16C")),
    ("GGML_BMI2", "pdep %%eax, %%eax, %%eax", ()),
    ("GGML_AVX_VNNI", "%{vex%} vpdpbusd %%ymm0, %%ymm0, %%ymm0", ("GGML_AVX2",)),
    # GGML_AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw: probe each of them.
    ("GGML_AVX512", "vpaddd %%zmm0, %%zmm0, %%zmm0; vplzcntd %%zmm0, %%zmm0; vpabsq %%ymm0, %%ymm0;"
                    " vpmullq %%zmm0, %%zmm0, %%zmm0; vpaddb %%zmm0, %%zmm0, %%zmm0", ("GGML_AVX2",)),
    ("GGML_AVX512_VBMI", "vpermb %%zmm0, %%zmm0, %%zmm0", ("GGML_AVX512",)),
    ("GGML_AVX512_VNNI", "vpdpbusd %%zmm0, %%zmm0, %%zmm0", ("GGML_AVX512",)),
    ("GGML_AVX512_BF16", "vcvtne2ps2bf16 %%zmm0, %%zmm0, %%zmm0", ("GGML_AVX512",)),
]
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def llama_version() -> str:
    """The llama-cpp-python version pinned in requirements.txt."""
    text = (ROOT / "requirements.txt").read_text()
    found = re.search(r"^llama-cpp-python(?:\[[^\]]*\])?==(\S+)", text, re.M)
    if not found:
        sys.exit("requirements.txt pins no llama-cpp-python version (expected llama-cpp-python[server]==X.Y.Z)")
    return found.group(1)


def runs(asm: str, folder: Path) -> bool:
    """Whether a program executing `asm` runs to the end here (False on SIGILL or if it will not assemble)."""
    src, exe = folder / "probe.c", folder / "probe"
    src.write_text(f'int main(void) {{ __asm__ volatile("{asm}" ::: "eax", "xmm0"); return 0; }}\n')
    built = subprocess.run(["cc", "-O0", str(src), "-o", str(exe)], capture_output=True)
    if built.returncode != 0:
        return False
    return subprocess.run([str(exe)], capture_output=True).returncode == 0


def runnable_options() -> list[str]:
    """The ggml instruction-set options whose probe program ran on this machine."""
    enabled: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for option, asm, needs in PROBES:
            if all(n in enabled for n in needs) and runs(asm, Path(tmp)):
                enabled.append(option)
    return enabled


def cmake_args() -> tuple[str, list[str]]:
    """CMake arguments for this machine, and the instruction sets they enable (for messages)."""
    override = os.environ.get("SELECTLLM_LLAMA_CMAKE_ARGS")
    if override:
        return override, ["(set by SELECTLLM_LLAMA_CMAKE_ARGS)"]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "-DGGML_NATIVE=ON", [f"native ({platform.machine()})"]
    enabled = runnable_options()
    options = [f"-D{o}={'ON' if o in enabled else 'OFF'}" for o, _asm, _needs in PROBES]
    options += [f"-D{o}=OFF" for o in NEVER]
    return " ".join(["-DGGML_NATIVE=OFF", *options]), enabled


def build_key(version: str, args: str) -> str:
    """What decides the built binary: change any part and the build is made again."""
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    facts = {"llama-cpp-python": version, "cmake_args": args, "cc": cc, "python": sys.version.split()[0],
             "machine": platform.machine()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def wheel_cache() -> Path:
    """Where built wheels are kept between installs (and between clones on this machine)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("SELECTLLM_WHEEL_CACHE", Path(base) / "selectllm-studio" / "wheels"))


def pip(python: str, *args: str, env: dict | None = None) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True, env=env)


def main(python: str) -> int:
    # 1. what this machine needs
    version = llama_version()
    args, enabled = cmake_args()
    key = build_key(version, args)
    stamp = Path(python).absolute().parent.parent / STAMP  # the venv (resolving would follow its symlink out)
    sets = " ".join(o.removeprefix("GGML_").lower() for o in enabled) or "none beyond x86-64"
    # 2. nothing changed: nothing to do
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        print(f"llama-cpp-python {version}: already built for this CPU ({sets}); nothing to rebuild")
        return 0
    # 3. build the wheel once per key, then install it
    folder = wheel_cache() / f"llama-cpp-python-{version}-{key}"
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels:
        print(f"llama-cpp-python {version}: building for this CPU ({sets}); about five minutes on two cores")
        env = {**os.environ, "CMAKE_ARGS": args, "FORCE_CMAKE": "1",
               "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        pip(python, "wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
            f"llama-cpp-python=={version}", "-w", str(folder), env=env)
        wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    pip(python, "install", "-q", "--no-deps", "--force-reinstall", str(wheels[-1]))
    stamp.write_text(json.dumps({"key": key, "version": version, "cmake_args": args, "enabled": enabled,
                                 "wheel": str(wheels[-1])}, indent=2))
    print(f"llama-cpp-python {version}: installed ({sets})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.executable))
