"""The view subcommands of ``aup``: list, show, compare, pareto, export, plot, dashboard.

``register(subparsers)`` adds them to the main parser of ``aup/cli.py``; each handler takes the
parsed arguments and returns an exit code. User mistakes raise ``aup.errors.UserError`` (one line,
exit 2, printed by the main CLI). Heavy modules (numpy, rich, matplotlib, plotly, the dashboard)
are imported inside the handlers so that ``aup --help`` and ``aup list`` start fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from aup.errors import UserError
from aup.numbers import json_safe
from aup.safe_text import shown_url

DEFAULT_LIMIT = 40  # rows of a terminal table when no trials are named; more is a wall of text


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the view subcommands to ``subparsers`` (each with ``set_defaults(func=handler)``)."""
    for name, help_text, configure, handler in _COMMANDS:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--storage", metavar="URL",
                            help="results store (default: $AUP_STORAGE, else sqlite:///.aup/aup.db)")
        configure(parser)
        parser.set_defaults(func=handler)


# --------------------------------------------------------------------------------------------------
# arguments


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def _args_list(parser: argparse.ArgumentParser) -> None:
    _json_flag(parser)


def _args_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see aup list)")
    parser.add_argument("--no-config", action="store_true", help="leave out the experiment JSON")
    _json_flag(parser)


def _selection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--where", action="append", default=[], metavar="COND",
                        help="keep trials matching COND, e.g. 'score>0.95' or 'compressor=l1_filter' "
                             "(operators > >= < <= = != ~; repeat for AND)")
    parser.add_argument("--sort", metavar="FIELD[:asc|desc]",
                        help="sort by a field; metrics sort best first unless :asc/:desc is given")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help=f"show at most N trials (tables default to {DEFAULT_LIMIT}, --json to all; 0: all)")


def _args_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see aup list)")
    parser.add_argument("trials", nargs="*", type=int, metavar="TRIAL", help="trial numbers (default: all completed)")
    _selection_args(parser)
    parser.add_argument("--all", dest="all_states", action="store_true",
                        help="include pruned, failed and running trials")
    parser.add_argument("--all-params", action="store_true", help="show hyperparameters that are equal in all trials")
    parser.add_argument("--layers", action="store_true", help="show per-layer sparsity / bits (always in side-by-side)")
    parser.add_argument("--layout", choices=("auto", "rows", "columns"), default="auto",
                        help="trials as rows, or side by side as columns (auto: side by side up to 6 trials)")
    _json_flag(parser)


def _args_pareto(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see aup list)")
    parser.add_argument("--objectives", metavar="M:max,M:min",
                        help="metrics and directions, e.g. score:max,model_bytes:min "
                             "(default: the study's objectives, plus model_bytes for one objective)")
    _json_flag(parser)


def _args_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see aup list)")
    parser.add_argument("--format", choices=("csv", "json"), default=None,
                        help="file format (default: from the -o suffix, else csv)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")


def _args_plot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see aup list)")
    parser.add_argument("-o", "--output", metavar="FILE.png|FILE.html",
                        help="output file (default: <experiment>.png in the current directory)")
    parser.add_argument("--x", metavar="METRIC", help="horizontal axis (default: model_bytes, else another size)")
    parser.add_argument("--y", metavar="METRIC", help="vertical axis (default: the first objective)")
    parser.add_argument("--no-label", action="store_true", help="do not write trial numbers next to the points")


def _args_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="experiment to open first (default: the list of experiments)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: only this machine can connect)")


# --------------------------------------------------------------------------------------------------
# handlers


def _store(args: argparse.Namespace) -> Any:
    from aup.store import resolve_storage_url
    from aup.views.records import open_store

    return open_store(resolve_storage_url(getattr(args, "storage", None)))


def _console() -> Any:
    from aup.safe_text import output_console

    return output_console()


def _print_json(data: Any) -> None:
    """JSON for scripts: non-finite numbers become null (NaN/Infinity are not JSON)."""
    indent = 1 if sys.stdout.isatty() else None  # the indenting encoder is pure Python: 5x slower
    sys.stdout.write(json.dumps(json_safe(data), indent=indent, default=str, allow_nan=False) + "\n")


def cmd_list(args: argparse.Namespace) -> int:
    from aup.store import resolve_storage_url
    from aup.views import tables
    from aup.views.records import open_store, sqlite_path

    url = resolve_storage_url(getattr(args, "storage", None))
    path = sqlite_path(url)
    if path is not None and not Path(path).expanduser().exists():  # nothing run here yet: an empty list
        data: list[dict[str, Any]] = []
    else:
        data = tables.list_data(open_store(url).experiments())
    if args.json:
        _print_json(data)
    elif not data:
        _console().print(f"No experiments in {shown_url(url)} yet.")
    else:
        _console().print(tables.render_list(data, shown_url(url)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from aup.views import recommend, tables

    experiment, trials = _store(args).load(args.name)
    data = tables.show_data(experiment, trials)
    chosen = recommend.for_study(experiment, trials)  # the same trial the run's end named
    data["recommended"] = chosen.to_attr()
    if args.no_config:
        data.pop("config")
    if args.json:
        _print_json(data)
        return 0
    from rich.text import Text

    console = _console()
    parts = tables.render_show(data, experiment, trials)
    parts.insert(1, Text(chosen.line))  # right under the experiment's facts
    for part in parts:
        console.print(part)
    return 0


def compare_selection(args: argparse.Namespace, experiment: Any, trials: list[Any]) -> Any:
    """The Comparison that ``aup compare`` shows for these arguments (shared with the tests)."""
    from aup.views import query, tables

    rows = tables.flat_rows(trials)
    front = tables.front_numbers(experiment, rows)
    if args.trials:
        chosen = query.select_trials(rows, args.trials)
    else:
        chosen = rows if args.all_states else [r for r in rows if r["state"] == "COMPLETE"]
    chosen = query.filter_rows(chosen, args.where)
    sort = args.sort or (None if args.trials else experiment.objective_names[0])
    if sort:  # by default best first, so that a limited table shows the trials worth choosing from
        field, descending = query.parse_sort(sort, experiment.objective_directions())
        chosen = query.sort_rows(chosen, field, descending) if chosen else chosen
    limit = args.limit if args.limit is not None else (0 if args.json or args.trials else DEFAULT_LIMIT)
    matching = len(chosen)
    if limit > 0:
        chosen = chosen[:limit]
    params = tables.param_names(trials)
    side_by_side = args.layout == "columns" or (args.layout == "auto" and 0 < len(chosen) <= tables.SIDE_BY_SIDE_MAX)
    columns = tables.compare_columns(experiment, chosen, params, all_params=args.all_params,
                                     layers=args.layers or side_by_side)
    return tables.Comparison(chosen, columns, params, front), side_by_side, matching, len(rows)


def cmd_compare(args: argparse.Namespace) -> int:
    from aup.views import query, tables

    experiment, trials = _store(args).load(args.name)
    comparison, side_by_side, matching, total = compare_selection(args, experiment, trials)
    if not comparison.rows:  # say why when a FIELD=VALUE names a value no trial has (a typo, mostly)
        for note in query.unknown_values(tables.flat_rows(trials), args.where):
            print(f"aup: {note}", file=sys.stderr)
    if args.json:
        _print_json(comparison.data())
        return 0
    if not comparison.rows:
        _console().print(f"No trial of {experiment.name!r} matches (of {total} trials).")
        return 0
    shown = (f"{len(comparison.rows)} of {matching} matching trials (--limit 0 shows all)"
             if matching > len(comparison.rows) else f"{matching} of {total} trials")
    front = "the accuracy/size Pareto front" + (" (feasible trials first)"
                                                 if any("feasible" in r for r in comparison.rows) else "")
    caption = f"{shown}; * = on {front}; (0.25x) = ratio to the uncompressed model"
    console = _console()
    console.print(tables.render_comparison(comparison, side_by_side=side_by_side, title=f"{experiment.name}: trials"))
    console.print(caption, markup=False, highlight=False, soft_wrap=True)  # not folded to the table's width
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from aup.views import pareto, tables

    experiment, trials = _store(args).load(args.name)
    rows = tables.flat_rows(trials)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if args.objectives:
        objectives = pareto.parse_objectives(args.objectives, experiment.objective_directions())
        from aup.views.query import check_fields

        check_fields([o.name for o in objectives], rows, "--objectives")
    else:
        objectives = pareto.default_objectives(experiment.objective_names, experiment.directions, complete)
    comparison = tables.pareto_data(rows, objectives, tables.param_names(trials), experiment)
    if args.json:
        _print_json({"objectives": [str(o) for o in objectives], "trials": comparison.data()})
        return 0
    spec = ", ".join(str(o) for o in objectives)
    if not comparison.rows:
        _console().print(f"No completed trial of {experiment.name!r} recorded {spec}.")
        return 0
    console = _console()
    console.print(tables.render_comparison(comparison, side_by_side=False,
                                           title=f"{experiment.name}: Pareto front ({spec})"))
    caption = f"{len(comparison.rows)} non-dominated of {len(complete)} completed trials"
    if any("feasible" in r for r in complete):
        caption += "; feasible trials first (constraints)"
    console.print(caption, markup=False, highlight=False, soft_wrap=True)  # not folded to the table's width
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aup.views import export

    kind = args.format or ("json" if args.output and args.output.lower().endswith(".json") else "csv")
    experiment, trials = _store(args).load(args.name)
    columns, records = export.to_records(experiment, trials)
    text = export.to_csv(columns, records) if kind == "csv" else export.to_json(records)
    if args.output:
        _write(Path(args.output), text)
        print(f"wrote {len(records)} trials to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def cmd_plot(args: argparse.Namespace) -> int:
    from aup.store import slug
    from aup.views import plot

    experiment, trials = _store(args).load(args.name)
    output = Path(args.output or f"{slug(experiment.name)}.png")
    written = plot.plot_experiment(experiment, trials, output, x=args.x, y=args.y, label=not args.no_label)
    print(f"wrote {written}", file=sys.stderr)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from aup.store import resolve_storage_url
    from aup.views import dashboard

    url = resolve_storage_url(args.storage)
    dashboard.serve(url, host=args.host, port=args.port, experiment=args.name)
    return 0


_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = [
    ("list", "List experiments with status, trial counts and best value.", _args_list, cmd_list),
    ("show", "Show one experiment: config, progress, best trial(s), failures by reason.", _args_show, cmd_show),
    ("compare", "Compare trials side by side: hyperparameters, score and size metrics.", _args_compare, cmd_compare),
    ("pareto", "The non-dominated trials for chosen metrics (e.g. score:max,model_bytes:min).", _args_pareto,
     cmd_pareto),
    ("export", "Export one row per trial (every hyperparameter and metric) as CSV or JSON.", _args_export, cmd_export),
    ("plot", "Plot accuracy against size with the Pareto front, value over trials, per-parameter views.",
     _args_plot, cmd_plot),
    ("dashboard", "Serve optuna-dashboard (read-only) on the results store, on 127.0.0.1 by default.",
     _args_dashboard, cmd_dashboard),
]
