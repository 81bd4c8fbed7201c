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
    _modules, graph, in_function, _heavy, other = check.analyse(REPO)
    assert check.strongly_connected(graph) == []
    assert in_function == []
    assert other == []  # inside functions, only heavy or optional libraries (umap, ray, llama_cpp, ...)
    assert check.upward_imports(graph) == []


def test_the_check_finds_a_cycle_hidden_in_a_function_and_an_import_up_the_layers(tmp_path: Path) -> None:
    pkg = tmp_path / "selectllm_core"
    (pkg / "pool").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pool" / "__init__.py").write_text("")
    (pkg / "store.py").write_text("from selectllm_core.pool import load\n")
    (pkg / "pool" / "load.py").write_text("def f():\n    from selectllm_core import store\n    return store\n")
    check = _checker()
    _modules, graph, in_function, _heavy, _other = check.analyse(tmp_path)
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


def test_a_param_checks_values_without_changing_them() -> None:
    """Values are part of a run's id: an int given for a float stays an int; a wrong type is refused."""
    from selectllm_core.errors import ConfigError
    from selectllm_core.methods import Param

    tau = Param("tau", float, 0.9, "similarity", min=0.0, max=1.0)
    assert tau.check(1) == 1 and isinstance(tau.check(1), int)
    for bad, says in (("0.5", "must be a number"), (True, "must be a number"), (1.5, "from 0.0 to 1.0")):
        with pytest.raises(ConfigError, match=says):
            tau.check(bad)
    seed = Param("seed", int, 0, "seed")
    with pytest.raises(ConfigError, match=r"seed \(--seed\) must be a whole number"):
        seed.check(2.0)


def test_a_run_stored_under_a_parameters_earlier_name_repeats_with_its_flag_today() -> None:
    old = {"method": "selectit", "params": {"budget": 10, "alpha": 0.2, "k": 3, "batch_size": 20, "top_n": 20},
           "backend": {}}
    assert "--phrasings 3" in methods.repeat_command(old)
    assert methods.setting(old) == "alpha=0.2, phrasings=3"
    with pytest.raises(Exception, match="no parameter k"):
        methods.METHODS["selectit"].resolve({"k": 3})  # the old name is read from stored runs, never taken


def test_one_worker_runs_units_in_the_calling_thread_so_ctrl_c_stops_at_once() -> None:
    import threading

    from selectllm_core.engines import ThreadExecutor

    caller = threading.get_ident()
    seen = list(ThreadExecutor(None, workers=1).map(lambda _r, i, _p: (i, threading.get_ident()), [(0, 0), (1, 0)]))
    assert seen == [(0, caller), (1, caller)]
    many = list(ThreadExecutor(None, workers=2).map(lambda _r, i, _p: threading.get_ident(), [(0, 0), (1, 0)]))
    assert caller not in many


def test_a_run_reports_a_new_pool_as_new_and_a_repeat_as_identical(tmp_path: Path) -> None:
    import pandas as pd
    from conftest import FakeEmbedder
    from fakes import ScriptedBackend

    from selectllm_core import pipeline
    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.store import Store

    path = tmp_path / "pool.jsonl"
    pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(30).to_json(path, orient="records", lines=True)
    store, config = Store(tmp_path / "ws.sqlite"), pipeline.RunConfig(budget=3, subset_size=10)
    kwargs = {"store": store, "backend": ScriptedBackend(), "embedder": FakeEmbedder(),
              "cache": EmbeddingCache(tmp_path / "cache")}
    assert pipeline.run(str(path), config, **kwargs).pool_saved.status == "new"
    assert pipeline.run(str(path), config, **kwargs).pool_saved.status == "identical"


def test_the_repeat_command_carries_the_backend_settings_that_decide_the_run() -> None:
    from selectllm_core.cli import commands

    params = {**dataclasses.asdict(RunConfig(budget=5))}
    local = methods.repeat_command({"method": "selectllm", "params": params, "backend": {
        "kind": "local", "model": "qwen 1.5b.gguf", "n_ctx": 2048, "seed": 0}})
    assert "--model PATH/TO/'qwen 1.5b.gguf'" in local and "--context-window 2048" in local
    bundled = methods.repeat_command({"method": "selectllm", "params": params, "backend": {
        "kind": "local", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "n_ctx": 8192, "seed": 0}})
    assert "--model" not in bundled and "--context-window" not in bundled
    remote = methods.repeat_command({"method": "selectllm", "params": params, "backend": {
        "kind": "openai", "base_url": "http://h:1/v1", "model": "m", "auth_env_var": "MY_KEY"}})
    args = remote.removeprefix("selectllm run POOL ").split()
    ctx = commands.run.make_context("run", ["pool.jsonl", *args])
    assert (ctx.params["backend"], ctx.params["api_key_env"], ctx.params["model"]) == ("openai", "MY_KEY", "m")
