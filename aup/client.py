"""The trial-side API, compatible with Auptimizer's ``aup`` client module.

A trial script is run as ``<script> <job config path>``. It loads its hyperparameters with
``aup.BasicConfig().load(sys.argv[1])``, trains, and reports with ``aup.print_result(value)``.
Everything here must import fast and must not import torch or tensorflow: the runner starts one
process per trial.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import os
import pickle
import shutil
import sys
import warnings
from typing import Any, Callable, Iterable

from aup import channel


class BasicConfig(dict):
    """A dict with attribute access, loadable from and savable to ``.json`` (and ``.yaml``) files.

    Auptimizer also read ``.pkl`` configs; unpickling runs code from the file, so ``load`` refuses a
    pickle unless the caller says it trusts the file (``load(path, trust=True)``).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def load(self, path: str | os.PathLike[str], *, trust: bool = False) -> "BasicConfig":
        """Read a JSON (or YAML, with PyYAML installed) config; a pickle only with ``trust=True``."""
        path = os.fspath(path)
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        elif path.endswith((".yaml", ".yml")):
            data = _load_yaml(path)
        elif path.endswith(".pkl"):
            if not trust:
                raise ValueError(f"{path}: refusing to unpickle a config (a pickle can run code when loaded); "
                                 "use a .json config, or load(path, trust=True) for a file you made yourself")
            with open(path, "rb") as handle:
                data = pickle.load(handle)  # noqa: S301 - the caller vouched for the file
        else:
            raise ValueError(f"{path}: a config must be a .json or .yaml file")
        if not isinstance(data, dict):
            raise TypeError(f"{path}: the config must hold a JSON object, not {type(data).__name__}")
        self.update(data)
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if path.endswith(".pkl"):
            with open(path, "wb") as handle:
                pickle.dump(dict(self), handle)
        else:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(dict(self), handle, indent=2, sort_keys=True)

    def to_flags(self, flags: Any) -> Any:
        """Copy the values onto an argparse/absl-like namespace (Auptimizer's ``aup_flags`` did not)."""
        for key, value in self.items():
            setattr(flags, key, value)
        return flags


def _load_yaml(path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or use a .json config") from None
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _as_number_list(value: Any) -> float | list[float]:
    if isinstance(value, (list, tuple)):
        return [_to_float(v) for v in value]
    return _to_float(value)


def _to_float(value: Any) -> float:
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def print_result(value: Any) -> None:
    """Report a result: a number, or a list ``[main, extra1, ...]`` when ``multi_res_labels`` is set.

    Every call is an intermediate result; the last call is the trial's final result. The value goes
    to the structured channel when the runner provides one, and is always printed as Auptimizer's
    ``#Auptimizer:<value>`` line so that the script's log shows it and legacy runners understand it.
    """
    number = _as_number_list(value)
    if isinstance(number, list) and not number:
        raise ValueError("print_result: expected a number or a non-empty list of numbers, got an empty list")
    channel.emit({"kind": "result", "value": number})
    text = ",".join(repr(v) for v in number) if isinstance(number, list) else repr(number)
    print(f"\n{channel.LEGACY_MARKER}{text}", file=sys.stderr, flush=True)


def log_metrics(**metrics: Any) -> None:
    """Report named metrics (e.g. ``accuracy=0.97``); they land as trial attributes in the store."""
    clean = {}
    for name, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)
        clean[name] = value
    if not channel.emit({"kind": "metrics", "metrics": clean}):
        print(f"aup metrics: {json.dumps(clean, default=str)}", file=sys.stderr, flush=True)


_save_callback: tuple[Callable[..., Any], tuple, dict] | None = None
_trial_end_hooks: list[Callable[[], None]] = []


def on_trial_end(hook: Callable[[], None]) -> None:
    """Run ``hook`` once the trial's final result is known: after ``@aup_args`` reported it, and at
    process exit. Compressors use it to report size metrics for scripts that never export. Hooks
    must be idempotent; a failing hook prints one line and never changes the trial's outcome."""
    if hook in _trial_end_hooks:
        return
    if not _trial_end_hooks:
        import atexit

        atexit.register(run_trial_end_hooks)
    _trial_end_hooks.append(hook)


def run_trial_end_hooks() -> None:
    for hook in list(_trial_end_hooks):
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - the trial is finished; never fail it here
            print(f"aup: end-of-trial report failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def aup_save_model(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Register how to save the model; called by ``@aup_args`` when the config asks for a save."""
    global _save_callback
    _save_callback = (fn, args, kwargs)


def model_folder(config: dict[str, Any]) -> str:
    """Where a trial should save its model: ``aup_models/<folder_name>`` under the working dir.

    ``folder_name`` must be one plain file name (the runner writes ``<experiment slug>-<trial>``);
    anything that could point elsewhere (``..``, a path) is refused, since the folder is emptied first.
    """
    name = str(config["folder_name"])
    if name in (".", "..") or not name or any(c in name for c in "/\\\0") or name != name.strip():
        raise ValueError(f"folder_name: expected a plain folder name, got {name!r}")
    return os.path.join("aup_models", name)


_SCRATCH: list[Any] = []  # this process's scratch folders, removed when it exits


def output_folder(config: dict[str, Any], prefix: str = "aup-trial-") -> str:
    """Where a trial script writes its model: kept on purpose or scratch that goes away.

    With ``save_model`` in the job config: ``aup_models/<folder_name>`` (:func:`model_folder`),
    which the runner keeps for the best trial and removes for the others. Otherwise a temporary
    folder that is deleted when the trial's process exits, so a run leaves nothing behind in the
    temp dir (``tempfile.mkdtemp`` would leave one folder, with its model, per trial).
    """
    import tempfile

    if config.get("save_model") and config.get("folder_name"):
        folder = model_folder(config)
        os.makedirs(folder, exist_ok=True)
        return folder
    scratch = tempfile.TemporaryDirectory(prefix=prefix)  # its finalizer removes it at interpreter exit
    _SCRATCH.append(scratch)
    return scratch.name


def _call_init_functions(module_globals: dict[str, Any], config: dict[str, Any]) -> None:
    """Auptimizer calls every module-level function whose name contains "init" before the main one."""
    for name in sorted(module_globals):
        obj = module_globals[name]
        if "init" in name and inspect.isfunction(obj) and obj.__module__ == module_globals.get("__name__"):
            obj(**_accepted_kwargs(obj, config))


def _accepted_kwargs(fn: Callable[..., Any], config: dict[str, Any]) -> dict[str, Any]:
    signature = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return dict(config)
    return {k: v for k, v in config.items() if k in signature.parameters}


def aup_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``main(config_path, **overrides)`` loads the config and calls ``fn`` with its keys.

    Config keys that ``fn`` does not take are dropped with a warning, a missing required parameter
    raises ValueError, and the return value is reported with ``print_result``. When the config has
    ``save_model: true``, the callback registered with ``aup_save_model`` runs inside
    ``aup_models/<folder_name>``.
    """

    @functools.wraps(fn)
    def wrapper(config_path: str | None = None, **overrides: Any) -> Any:
        global _save_callback
        path = config_path if config_path is not None else sys.argv[1]
        config = BasicConfig().load(path)
        config.update(overrides)
        _call_init_functions(fn.__globals__, config)
        signature = inspect.signature(fn)
        kwargs = _accepted_kwargs(fn, config)
        ignored = sorted(set(config) - set(kwargs))
        if ignored and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            warnings.warn(f"aup_args: {fn.__name__} does not take {', '.join(ignored)}; ignored", stacklevel=2)
        missing = [
            name for name, p in signature.parameters.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in kwargs
        ]
        if missing:
            raise ValueError(f"aup_args: the config has no value for {', '.join(missing)} of {fn.__name__}")
        _save_callback = None
        result = fn(**kwargs)
        if result is not None:
            print_result(result)
        if config.get("save_model") and _save_callback is not None:
            _run_save_callback(config)
        run_trial_end_hooks()
        return result

    return wrapper


def _run_save_callback(config: dict[str, Any]) -> None:
    folder = model_folder(config)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        fn, args, kwargs = _save_callback  # type: ignore[misc]
        fn(*args, **kwargs)
    finally:
        os.chdir(previous)


def aup_flags(flags: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for absl/argparse-style scripts: loads ``sys.argv[1]`` onto ``flags`` then calls ``fn``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            BasicConfig().load(sys.argv[1]).to_flags(flags)
            result = fn(*args, **kwargs)
            if result is not None:
                print_result(result)
            return result

        return wrapper

    return decorate


def iter_results(values: Iterable[Any]) -> None:
    """Report several intermediate results at once (convenience for scripts that collect a history)."""
    for value in values:
        print_result(value)
