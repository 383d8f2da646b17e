"""``python -m aup.compression EXPERIMENT.json [--automatic] [--launch_dashboard]``: Auptimizer's entry point.

The command lives here, in the command-line layer next to ``aup.cli``; ``aup/compression/__main__.py``
only calls :func:`main` (Auptimizer's users type that module path).

Auptimizer documents two modes for a compression experiment and aup keeps both spellings:

* without ``--automatic``, a *one-time* compression: exactly one trial with the config as written
  (``proposer``, ``n_samples`` and ``n_parallel`` do not apply), ``save_model`` on so that the
  script exports its model into the trial's ``folder_name``. A config that still holds search
  ranges is refused with one line, because running it once would have to invent the values;
* with ``--automatic``, the search, exactly what ``aup run EXPERIMENT.json`` does.

``--launch_dashboard`` serves aup's read-only dashboard (optuna-dashboard on the same store,
127.0.0.1) while the experiment runs; on a terminal it keeps serving afterwards until Ctrl-C, as
Auptimizer's did. Auptimizer's ``--user``, ``--aup_folder`` and ``--sleep`` are accepted and have
no effect (aup has no user table, no env.ini and no polling interval); ``--log debug`` shows
tracebacks like ``--debug``.

Nothing heavy is imported before it is needed: parsing and validation are torch-free.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from aup.errors import UserError

PROG = "python -m aup.compression"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a compression experiment: one-time by default, the search with --automatic.")
    parser.add_argument("experiment", metavar="EXPERIMENT.json")
    parser.add_argument("--automatic", action="store_true",
                        help="search the ranges of the compression section (and parameter_config) with the proposer")
    parser.add_argument("--launch_dashboard", "--launch-dashboard", action="store_true",
                        help="serve the read-only dashboard on 127.0.0.1 while the experiment runs")
    parser.add_argument("--dashboard_port", "--dashboard-port", type=int, default=None, metavar="PORT",
                        help="dashboard port (default 8080; 0 picks a free one); needs --launch_dashboard")
    parser.add_argument("--n_samples", "--n-samples", type=int, default=None, metavar="N",
                        help="with --automatic: run at most N trials instead of the JSON's n_samples (a quick check)")
    parser.add_argument("--storage", metavar="URL",
                        help="results store (default: $AUP_STORAGE, else sqlite:///.aup/aup.db)")
    parser.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live display")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log", choices=("debug", "info", "warn", "error"), default="info",
                        help="Auptimizer's log level; 'debug' shows tracebacks")
    for legacy in ("--user", "--aup_folder", "--sleep"):
        parser.add_argument(legacy, default=None, help=argparse.SUPPRESS)
    return parser


def one_time_experiment(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The experiment of a one-time run: one trial of the config as written, its model saved.

    Raises UserError (one line) when the config searches anything: that needs ``--automatic``.
    """
    from aup.compression.search_space import has_ranges

    if raw.get("compression") is None:
        raise UserError(f"{source}: compression: required key is missing (python -m aup.compression runs "
                        "compression experiments; use python -m aup for a plain search)")
    searched = []
    if has_ranges(raw["compression"]):
        searched.append("the compression section has search ranges")
    if raw.get("parameter_config"):
        searched.append("parameter_config is set")
    if searched:
        raise UserError(f"{source}: {' and '.join(searched)}: add --automatic to search them, or give fixed "
                        "values for a one-time compression")
    one = {k: v for k, v in raw.items() if k not in ("proposer", "n_samples", "n_parallel", "parameter_config")}
    one["resource_args"] = {**(raw.get("resource_args") or {}), "save_model": True}
    return one


def _raw_json(path: str) -> dict[str, Any] | None:
    """The experiment JSON as a dict, or None when it cannot be read (load_experiment then says why)."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _launch_dashboard(url: str, port: int) -> Any:
    """Start the read-only dashboard on a thread; the store is created first so that it has something to show."""
    from aup import store
    from aup.views import dashboard

    store.open_storage(url)
    server, _thread = dashboard.start(url, host="127.0.0.1", port=port)
    print(f"aup dashboard (read-only) on http://127.0.0.1:{server.server_port}/dashboard", file=sys.stderr)
    return server


def _serve_until_interrupted(server: Any) -> None:
    """Auptimizer kept its dashboard up after the run until Ctrl-C; do so on a terminal only."""
    if not sys.stdout.isatty():
        return
    print(f"the dashboard keeps serving on http://127.0.0.1:{server.server_port}/dashboard; Ctrl-C to stop",
          file=sys.stderr)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def run(args: argparse.Namespace) -> int:
    from aup import store
    from aup.config import load_experiment, validate_experiment

    if args.dashboard_port is not None and not args.launch_dashboard:
        raise UserError("--dashboard_port needs --launch_dashboard")
    if not args.automatic:
        raw = _raw_json(args.experiment)
        if raw is not None:
            one_time_experiment(raw, args.experiment)  # "needs --automatic" before any other complaint
    if args.n_samples is not None and (not args.automatic or args.n_samples < 1):
        raise UserError("--n_samples takes a positive number and applies to --automatic runs only")
    loaded = load_experiment(args.experiment)  # the file as written must be valid in either mode
    if not args.automatic:
        loaded = validate_experiment(one_time_experiment(loaded.raw, args.experiment), args.experiment)
    elif args.n_samples is not None:
        raw = {**loaded.raw, "n_samples": args.n_samples}
        loaded = validate_experiment(raw, args.experiment)
        loaded.raw = raw
    from aup.runner.experiment import ExperimentRunner, prepare

    prepared = prepare(loaded)  # every check before anything is created
    url = store.resolve_storage_url(args.storage)
    server = None
    if args.launch_dashboard:
        server = _launch_dashboard(url, 8080 if args.dashboard_port is None else args.dashboard_port)
    try:
        result = ExperimentRunner(prepared, url, live=False if args.no_live else None).run()
        if server is not None:
            _serve_until_interrupted(server)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return result.exit_code


def entry() -> None:
    """``python -m aup.compression``: :func:`main`, then the process ends like ``aup``'s
    (``aup.cli.finish_quickly``: no module teardown once the command returned)."""
    from aup.cli import finish_quickly

    finish_quickly(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2 with one line for a user error)."""
    from aup.cli import guarded

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return guarded(lambda: run(args), debug=args.debug or args.log == "debug")
