"""The `selectllm` command: the whole pipeline in one subcommand, one subcommand per step, and the other methods.

Errors are converted once, here: the group turns the core's SelectLLMError into a one-paragraph message and
a non-zero exit (never a traceback), and Ctrl-C into a note that the same command resumes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from selectllm_core.cli.commands import COMMANDS
from selectllm_core.cli.curate import CURATE_COMMANDS
from selectllm_core.cli.methods import compare, method_group
from selectllm_core.cli.models import MODEL_COMMANDS
from selectllm_core.cli.spend import SPEND_COMMANDS
from selectllm_core.errors import SelectLLMError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class SelectLLMGroup(click.Group):
    """A click group that converts the core's errors at its boundary, for every subcommand at any depth."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SelectLLMError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted. Run the same command again to resume: finished work is kept.", err=True)
            sys.exit(130)


@click.group(cls=SelectLLMGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="selectllm-studio")
def main() -> None:
    """Choose which unlabeled instructions to annotate, the SelectLLM way.

    \b
    A pool of instructions is embedded, split with equal-size K-means into diverse
    subsets, and an LLM picks the best few of each subset, saying why.
    Everything is kept in a workspace file, so runs resume and decisions persist.

    \b
    Quick start (offline, bundled models):
      selectllm run pool.jsonl --budget 100 --out batch.csv
    Step by step:
      selectllm load pool.jsonl        # check and store the pool
      selectllm plan pool.jsonl --budget 100
      selectllm run pool.jsonl --budget 100
      selectllm export RUN_ID --out batch.csv
    """


for _command in (*COMMANDS, *CURATE_COMMANDS, *SPEND_COMMANDS, *MODEL_COMMANDS, method_group(), compare):
    main.add_command(_command)


if __name__ == "__main__":
    main()
