"""The `selectllm` commands for a curator's decisions on a run's picks: decide, history, undo, import, promote."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from selectllm_core.cli.options import open_store, workspace_option
from selectllm_core.errors import ConfigError, ExportError
from selectllm_core.studio import curate


def default_curator() -> str:
    """$SELECTLLM_CURATOR, else the OS user name ("" when the system has none to give)."""
    try:
        return os.environ.get("SELECTLLM_CURATOR") or getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return ""


curator_option = click.option(
    "--curator", default=default_curator, show_default="$SELECTLLM_CURATOR, else your OS user name",
    help="Who makes the change, as the decision history records it. Default: $SELECTLLM_CURATOR, else the OS "
         "user name.")


@click.command()
@click.argument("run_id")
@click.option("--accept", multiple=True, help="Row id to accept (repeatable).")
@click.option("--reject", multiple=True, help="Row id to reject (repeatable).")
@click.option("--accept-all", is_flag=True, help="Accept every pick that has no decision yet.")
@click.option("--note", default="", help="Note stored with these decisions.")
@curator_option
@workspace_option
def decide(run_id: str, accept: tuple[str, ...], reject: tuple[str, ...], accept_all: bool, note: str,
           curator: str, workspace: str | None) -> None:
    """Record curator decisions on picks without the app."""
    store = open_store(workspace)
    known = set(store.selection(run_id)["id"])
    unknown = [r for r in (*accept, *reject) if r not in known]
    if unknown:
        raise ConfigError(f"Not picks of {run_id}: {', '.join(unknown[:5])}. See `selectllm status`.")
    decisions = {r: ("accepted", note) for r in accept} | {r: ("rejected", note) for r in reject}
    changed = store.set_decisions(run_id, decisions, curator=curator)
    accepted = store.accept_pending(run_id, note, curator=curator) if accept_all else 0
    click.echo(f"{changed + accepted} decisions saved.")


@click.command()
@click.argument("run_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the whole history to this CSV file (one line per row changed, with the before and after "
                   "decision and note), instead of listing the changes.")
@workspace_option
def history(run_id: str, out: Path | None, workspace: str | None) -> None:
    """List who changed a run's decisions and when (newest first), or write the history to a CSV file."""
    store = open_store(workspace)
    store.get_run(run_id)
    if out is not None:
        try:
            out.write_bytes(curate.history_csv(store, run_id))
        except OSError as exc:
            raise ExportError(f"Cannot write {out}: {exc}. Choose a file in a folder you can write to.") from exc
        click.echo(f"History of {run_id} written to {out}.")
        return
    changes = curate.history_changes(store, run_id)
    if changes.empty:
        click.echo(f"No decision of {run_id} has been changed yet.")
    for c in changes.itertuples():
        undone = f"  [undone {c.undone}]" if c.undone else ""
        click.echo(f"{c.change:>5}  {c.at}  {c.curator}: {c.what}{undone}")


@click.command()
@click.argument("run_id")
@curator_option
@workspace_option
def undo(run_id: str, curator: str, workspace: str | None) -> None:
    """Undo the latest change of a run's decisions: a bulk action, an import or a swap is undone whole.

    Each undo goes one change further back; the undo itself is recorded in the history.
    """
    store = open_store(workspace)
    store.get_run(run_id)
    click.echo(curate.undo(store, run_id, curator=curator))


@click.command("import-decisions")
@click.argument("run_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-unknown", is_flag=True,
              help="Import the rows whose id is a pick of the run and skip the others (they are counted). Without "
                   "it, one unknown id stops the whole import.")
@curator_option
@workspace_option
def import_decisions(run_id: str, file: Path, skip_unknown: bool, curator: str, workspace: str | None) -> None:
    """Import decisions, notes or annotations by id from a CSV or JSONL file: the whole file, or nothing.

    \b
    The file needs an id column and any of: decision (accepted, rejected or pending), note, and
    annotation columns (e.g. response: stored with the pick and exported with it). Empty cells change
    nothing. An export of the run, with the annotators' columns added, imports as it is.
    """
    store = open_store(workspace)
    store.get_run(run_id)
    plan = curate.plan_import(store, run_id, file.read_bytes(), file.name)
    for note in plan.notes:
        click.echo(note, err=True)
    message = curate.apply_import(store, run_id, plan, curator=curator, skip_unknown=skip_unknown)
    click.echo(plan.summary())
    click.echo(message)


@click.command()
@click.argument("run_id")
@click.argument("candidate_id")
@click.option("--replace", metavar="PICK_ID", default=None,
              help="A pick of the candidate's subset to swap out: it leaves the selection, recorded as rejected. "
                   "Without it, the candidate fills an open place of the budget.")
@curator_option
@workspace_option
def promote(run_id: str, candidate_id: str, replace: str | None, curator: str, workspace: str | None) -> None:
    """Make a row the model passed over a curator pick (accepted): in place of a pick, or in an open place.

    Candidates are the rows of the run's subsets that the selection leaves out: rows the model passed over,
    its picks that the budget left out, and every row of a subset that failed.
    """
    store = open_store(workspace)
    click.echo(curate.promote(store, run_id, candidate_id, replace=replace, curator=curator))


CURATE_COMMANDS = (decide, history, undo, import_decisions, promote)
