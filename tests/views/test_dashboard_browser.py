"""``aup dashboard`` in a real browser: Debian's headless Chromium driven by Playwright.

The test starts the dashboard and the browser itself. Playwright never downloads a browser here:
it drives ``/usr/bin/chromium`` (CI installs it with ``apt-get install -y chromium``); without that
binary the test is skipped with the reason.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from aup.views import dashboard
from aup.views.records import open_store
from aup.views.synthetic import make_store

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # starts a dashboard server and a headless browser
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (install Debian's: apt-get install -y chromium)"),
]


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    make_store(url, "browser-exp", n_trials=12, seed=5)
    server, thread = dashboard.start(url, host="127.0.0.1", port=0)
    try:
        yield url, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture()
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context.new_page()
        finally:
            context.close()


def test_dashboard_shows_experiment_and_model_bytes_read_only(served: tuple[str, str], page: Any) -> None:
    url, base = served
    experiment, trials = open_store(url).load("browser-exp")
    first = next(t for t in trials if t.state == "COMPLETE")

    page.goto(f"{base}/dashboard", wait_until="networkidle")
    page.get_by_text("browser-exp").first.click()  # the experiment is listed: open it
    page.wait_for_url(f"**/dashboard/studies/{experiment.study_id}**")

    # optuna-dashboard 0.21 keeps its trial table on the "Smart Selection" page: one column per
    # user attribute, so aup's metrics are columns there ("UserAttribute model_bytes").
    page.goto(f"{base}/dashboard/studies/{experiment.study_id}/smartSelection", wait_until="networkidle")
    page.wait_for_function("document.body.innerText.includes('UserAttribute model_bytes')", timeout=30_000)
    row = page.locator("tr", has_text=f"{first.params['lr']}").first
    assert str(first.attrs["model_bytes"]) in row.inner_text()  # a trial's model_bytes, in its own row

    page.goto(f"{base}/dashboard/studies/{experiment.study_id}/trials", wait_until="networkidle")
    page.wait_for_function("document.body.innerText.includes('User Attributes')", timeout=30_000)  # detail too
    assert f"model_bytes {first.attrs['model_bytes']}" in page.inner_text("body")

    # Nothing in the browser can change the store: every mutating call is refused.
    status = page.evaluate(
        """async ([base, study]) => {
            const calls = [["PUT", `/api/studies/${study}/note`, {version: 1, body: "x"}],
                           ["DELETE", `/api/studies/${study}`, null],
                           ["POST", "/api/studies", {study_name: "evil", directions: ["minimize"]}]];
            const out = [];
            for (const [method, path, body] of calls) {
                const r = await fetch(base + path, {method, headers: {"Content-Type": "application/json"},
                                                     body: body && JSON.stringify(body)});
                out.push(r.status);
            }
            return out;
        }""", [base, experiment.study_id])
    assert status == [405, 405, 405]
    assert [e.name for e in open_store(url).experiments()] == ["browser-exp"]
