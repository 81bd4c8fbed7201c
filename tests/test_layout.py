"""The package's house rules, checked on its source: no import cycles, no in-function imports of its own
modules, and one declaration per method parameter."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from selectllm_core import methods
from selectllm_core.methods.selectllm import PARAMS, RunConfig

REPO = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "scripts" / "check_imports.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycle_and_no_own_import_inside_a_function() -> None:
    check = _checker()
    _modules, graph, in_function, _heavy = check.analyse(REPO)
    assert check.strongly_connected(graph) == []
    assert in_function == []
    assert check.upward_imports(graph) == []


def test_the_check_finds_a_cycle_hidden_in_a_function_and_an_import_up_the_layers(tmp_path: Path) -> None:
    pkg = tmp_path / "selectllm_core"
    (pkg / "pool").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pool" / "__init__.py").write_text("")
    (pkg / "store.py").write_text("from selectllm_core.pool import load\n")
    (pkg / "pool" / "load.py").write_text("def f():\n    from selectllm_core import store\n    return store\n")
    check = _checker()
    _modules, graph, in_function, _heavy = check.analyse(tmp_path)
    assert check.strongly_connected(graph) == [["selectllm_core.pool.load", "selectllm_core.store"]]
    assert [(name, target) for name, _line, target in in_function] == [("selectllm_core.pool.load",
                                                                         "selectllm_core.store")]
    assert check.upward_imports(graph) == [("selectllm_core.pool.load", "selectllm_core.store")]
    assert check.main(["--root", str(tmp_path)]) == 1


def test_selectllm_run_config_fields_are_the_registry_params() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.name != "budget"}
    assert fields == {p.name: p.default for p in PARAMS}
    assert methods.METHODS["selectllm"].params is PARAMS


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_method_parameter_is_declared_once_with_help(name: str) -> None:
    method = methods.METHODS[name]
    names = [p.name for p in method.params]
    assert len(names) == len(set(names))
    assert all(p.help and p.type in (int, float, str, bool) for p in method.params)
    assert all(p.default is None or isinstance(p.default, p.type) for p in method.params)
    assert method.resolve({}) == method.defaults


def test_a_selectllm_runs_repeat_command_parses_back_to_the_same_config() -> None:
    """The manifest's repeat command, given to `selectllm run`, asks for the same run (so it resumes it)."""
    import shlex

    from selectllm_core.cli import commands

    config = RunConfig(budget=40, subset_size=12, picks_per_subset=2, split="similar", seed=3, shuffle=False,
                       prompt="low-toxicity", domain="medical advice", max_tokens=300, max_input_chars=500,
                       sample=200)
    stored = {"method": "selectllm", "params": dataclasses.asdict(config),
              "backend": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    command = methods.repeat_command(stored)
    assert command.startswith("selectllm run POOL ")
    args = shlex.split(command.removeprefix("selectllm run ").replace("POOL", "pool.jsonl", 1))
    ctx = commands.run.make_context("run", args)
    o = dict(ctx.params)
    assert (o["backend"], o["base_url"], o["model"]) == ("openai", "http://127.0.0.1:9/v1", "m")
    again = RunConfig(budget=o["budget"], **{p.name: o[p.name] for p in PARAMS})
    assert again == config
