"""``aup dashboard``: optuna-dashboard on the results store, read-only, on 127.0.0.1 by default.

Auptimizer's dashboard listened on 0.0.0.0 without authentication and could create and start
experiments, i.e. run arbitrary scripts for anyone on the network (spec section 11, item 14).
aup serves optuna-dashboard instead (every experiment is an Optuna study, so it needs no adapter)
with three guards:

* it binds 127.0.0.1 unless ``--host`` is given explicitly;
* :class:`ReadOnly` lets only GET and HEAD through. optuna-dashboard itself can change the store
  from the browser: create, rename and delete studies, edit study and trial notes, tell trial
  results, set trial user attributes, skip trials, upload and delete artifacts, record preferences
  and migrate the RDB schema, all with POST / PUT / DELETE. Those answer 405 here, so nothing
  done in the browser changes results or starts anything;
* on a loopback address, requests whose ``Host`` header is not a loopback name are refused, so a
  web page the user visits cannot read the results through DNS rebinding.

aup's metrics are trial user attributes, which optuna-dashboard shows in its trial table (one
column per attribute, sortable and filterable: ``model_bytes``, ``param_count``, ``score``...) and
in each trial's detail page.
"""
from __future__ import annotations

import ipaddress
import json
import sys
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from aup.errors import UserError

SAFE_METHODS = frozenset({"GET", "HEAD"})


class ReadOnly:
    """WSGI middleware: only GET/HEAD reach the dashboard; optionally only loopback Host headers."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in SAFE_METHODS:
            return _refuse(start_response, "405 Method Not Allowed",
                           "the aup dashboard is read-only: it cannot change results or start anything",
                           [("Allow", "GET, HEAD")])
        if self.loopback_only and not _loopback_host(environ.get("HTTP_HOST", "")):
            return _refuse(start_response, "403 Forbidden", "this dashboard only answers requests for localhost", [])
        return self.app(environ, start_response)


def _refuse(start_response: Callable[..., Any], status: str, reason: str,
            headers: list[tuple[str, str]]) -> Iterable[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]


def _loopback_host(host_header: str) -> bool:
    """``localhost:8080``, ``127.0.0.1``, ``[::1]:8080`` are loopback; anything else is not."""
    if host_header.startswith("["):
        host = host_header[1:host_header.find("]")] if "]" in host_header else host_header
    else:
        host = host_header.split(":")[0] if host_header.count(":") <= 1 else host_header
    return is_loopback(host)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def make_app(storage: Any, *, loopback_only: bool = True) -> Callable[..., Iterable[bytes]]:
    """optuna-dashboard's WSGI app on ``storage`` (an Optuna storage), wrapped read-only."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise UserError("the dashboard needs optuna-dashboard: pip install 'aup[dashboard]'") from None
    return ReadOnly(wsgi(storage), loopback_only=loopback_only)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the browser keeps connections open; they must not block Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass


def start(url: str, *, host: str = "127.0.0.1", port: int = 8080) -> tuple[WSGIServer, threading.Thread]:
    """Serve the dashboard on a background thread; returns the server (``server.server_port``) and thread."""
    from aup.store import open_storage
    from aup.views.records import open_store

    open_store(url)  # a clear error for a missing or foreign store, before anything is created
    app = make_app(open_storage(url), loopback_only=is_loopback(host))
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror} (try --port 0 for a free port)") from None
    thread = threading.Thread(target=server.serve_forever, name="aup-dashboard", daemon=True)
    thread.start()
    return server, thread


def study_path(url: str, experiment: str | None) -> str:
    """The dashboard path of ``experiment`` (its study id), or the study list."""
    if not experiment:
        return "/dashboard"
    from aup.views.records import open_store

    store = open_store(url)
    by_name = {e.name: e.study_id for e in store.experiments()}
    if experiment not in by_name:
        store.load(experiment)  # raises the "no experiment named ..." error with suggestions
    return f"/dashboard/studies/{by_name[experiment]}"


def serve(url: str, *, host: str = "127.0.0.1", port: int = 8080, experiment: str | None = None) -> None:
    """Run until Ctrl-C, printing where to point the browser."""
    path = study_path(url, experiment)
    server, thread = start(url, host=host, port=port)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"aup dashboard (read-only) on http://{shown_host}:{server.server_port}{path}  - Ctrl-C to stop",
          file=sys.stderr)
    if not is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this address can read these results "
              "(there is no login)", file=sys.stderr)
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
