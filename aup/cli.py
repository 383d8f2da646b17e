"""The ``aup`` command line: ``run`` and ``resume`` here, the views' subcommands from ``aup.views.cli``.

``python -m aup EXPERIMENT.json [--resume]`` is Auptimizer's spelling and means ``aup run``.
A user error (bad JSON, unknown experiment...) is one line ``aup: error: ...`` on stderr and exit
status 2; a traceback only with ``--debug``. Nothing heavy is imported before a command needs it
(``python -m aup`` never imports torch).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from aup.errors import UserError
from aup.safe_text import hide_secrets, printable

COMMANDS = ("run", "resume", "worker", "list", "show", "compare", "pareto", "export", "plot", "dashboard")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", metavar="URL",
                        help="SQLAlchemy URL of the results database (default: $AUP_STORAGE, else .aup/aup.db)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aup", description="Hyperparameter search with model compression as a first-class dimension.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = subparsers.add_parser("run", help="run an experiment JSON")
    run.add_argument("experiment", metavar="EXPERIMENT.json")
    run.add_argument("--resume", action="store_true",
                     help="continue the latest unfinished run of this experiment instead of starting a new one")
    run.add_argument("--join", action="store_true",
                     help="join the running study of this experiment as one more worker (shared store, see aup worker)")
    run.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live display")
    _common(run)
    run.set_defaults(func=cmd_run)
    worker = subparsers.add_parser(
        "worker", help="run trials of a running experiment in a shared store (several machines, one study)")
    worker.add_argument("name", help="experiment (study) name, e.g. 'digits'")
    worker.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live display")
    _common(worker)
    worker.set_defaults(func=cmd_worker)
    resume = subparsers.add_parser("resume", help="continue an interrupted experiment")
    resume.add_argument("name", help="experiment (study) name, e.g. 'digits' or 'digits (2)'")
    resume.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live display")
    _common(resume)
    resume.set_defaults(func=cmd_resume)
    from aup.views.cli import register

    register(subparsers)
    for name, sub in subparsers.choices.items():  # the views' subcommands get the common --debug
        if not any(action.dest == "debug" for action in sub._actions):
            sub.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _normalise(argv: list[str], parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Put the command first: ``aup EXP.json ...`` (Auptimizer's ``python -m aup EXP.json``) means
    ``aup run EXP.json ...``, and options may come before the experiment or the command
    (``python -m aup --storage URL EXP.json``, ``aup --storage URL list``), as argparse users expect.
    """
    takes_value = _value_options(parser or build_parser())
    index, skip = None, False
    for position, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in takes_value
        else:
            index = position
            break
    if index is None:
        return argv
    lead, command, rest = argv[:index], argv[index], argv[index + 1:]
    if command in COMMANDS:
        return [command, *lead, *rest]
    return ["run", *lead, command, *rest]


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings of every subcommand that take a value (``--storage URL``, ``--where EXPR``...)."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(o for a in sub._actions if a.option_strings and a.nargs != 0 for o in a.option_strings)
    return found


def cmd_run(args: argparse.Namespace) -> int:
    from aup import store
    from aup.config import load_experiment
    from aup.runner.experiment import ExperimentRunner, prepare, resume_experiment

    live = False if args.no_live else None
    loaded = load_experiment(args.experiment)
    if args.join:
        if args.resume:
            raise UserError("--join and --resume: choose one (join a running study, or resume a stopped one)")
        from aup.runner.experiment import join_experiment

        return join_experiment(store.resolve_storage_url(args.storage), loaded=loaded, live=live).exit_code
    if args.resume:
        url = store.resolve_storage_url(args.storage)
        name = _resumable(store.open_storage(url, create=False), loaded.experiment.name)
        return resume_experiment(name, url, live=live).exit_code
    prepared = prepare(loaded)  # every check first: an invalid experiment creates nothing, not even .aup/
    url = store.resolve_storage_url(args.storage)
    return ExperimentRunner(prepared, url, live=live).run().exit_code


def _resumable(storage: object, name: str) -> str:
    """The latest study of experiment ``name`` (``name`` or ``name (n)``)."""
    from aup import store

    latest = store.latest_study_for(storage, name)  # type: ignore[arg-type]
    if latest is None:
        raise UserError(f"--resume: no earlier run of the experiment {name!r} in the storage")
    return latest


def cmd_resume(args: argparse.Namespace) -> int:
    from aup import store
    from aup.runner.experiment import resume_experiment

    url = store.resolve_storage_url(args.storage)
    return resume_experiment(args.name, url, live=False if args.no_live else None).exit_code


def cmd_worker(args: argparse.Namespace) -> int:
    from aup import store
    from aup.runner.experiment import join_experiment

    url = store.resolve_storage_url(args.storage)
    return join_experiment(url, name=args.name, live=False if args.no_live else None).exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aup`` and ``python -m aup``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_normalise(argv, parser))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return guarded(lambda: int(args.func(args) or 0), debug=getattr(args, "debug", False))


def entry() -> None:
    """The ``aup`` command and ``python -m aup``: :func:`main`, then a quick exit.

    Python's own teardown (clearing ~900 modules: optuna, SQLAlchemy, alembic, pydantic, rich...)
    takes a quarter of a second after the work is done, a third of what ``aup run`` costs beyond
    its trials. Once main has returned, exit handlers ran and the output is flushed, nothing is
    left for it to do: the process ends with ``os._exit``. Not when other threads still run (their
    normal shutdown joins them), under a profiler or tracer (``python -m cProfile`` writes its file
    after the program returns), or when main raised; ``main()`` itself (tests, embedding) never exits.
    """
    code = main()
    finish_quickly(code)


def finish_quickly(code: int) -> None:
    """Run the exit handlers, flush the standard streams and end the process with ``code``."""
    import atexit
    import threading

    if threading.active_count() > 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    atexit._run_exitfuncs()  # logging.shutdown, weakref finalizers (temporary folders), libraries'
    store = sys.modules.get("aup.store")
    if store is not None:
        store.close_storages()  # SQLite folds its write-ahead log back into the file
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (aup list | head): nothing more to say
            pass
    os._exit(code)


def guarded(call: Callable[[], int], *, debug: bool) -> int:
    """Run a command: a user error is one line and its exit code (2), Ctrl-C 130, a bug one line and 1.

    With ``debug`` the exception propagates (the traceback). Shared by ``aup`` and
    ``python -m aup.compression``.
    """
    try:
        return call()
    except UserError as exc:
        if debug:
            raise
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"aup: error: {printable(hide_secrets(line))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("aup: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: one line, the traceback on request
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"aup: internal error: {type(exc).__name__}{': ' + printable(hide_secrets(first)) if first else ''} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1
