"""The view commands (list, show, compare, pareto, export, plot) on a store made by a real experiment.

The store comes from ``python -m aup`` running a small compression experiment: a numpy MLP on
scikit-learn's digits, magnitude-pruned and quantized per trial, sizes measured from the packed
weights, two trials failing on purpose (bits=2 is refused by the script). Unit tests of the fast
SQL reader, the Pareto search and the selection options use a synthetic store.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aup.cli import main
from aup.errors import UserError
from aup.views import pareto, query
from aup.views.records import open_store, rows_from_frozen
from aup.views.synthetic import make_store

TRIAL_SCRIPT = '"""Trial: a 64-32-10 numpy MLP on scikit-learn\'s digits, magnitude-pruned and quantized, sizes measured."""\nimport gzip\nimport io\nimport os\nimport sys\nimport time\n\nimport numpy as np\nimport aup\n\n\ndef train(x, y, lr, epochs=60, hidden=32, seed=0):\n    rng = np.random.default_rng(seed)\n    w1 = rng.normal(0, 0.3, (64, hidden)); w2 = rng.normal(0, 0.3, (hidden, 10))\n    onehot = np.eye(10)[y]\n    for _ in range(epochs):\n        h = np.maximum(x @ w1, 0); z = h @ w2\n        p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)\n        if not np.isfinite(p).all():\n            sys.exit("training diverged (non-finite loss)")\n        g = (p - onehot) / len(x)\n        gw2 = h.T @ g; gh = g @ w2.T * (h > 0); gw1 = x.T @ gh\n        w1 -= lr * gw1; w2 -= lr * gw2\n    return {"fc1": w1, "fc2": w2}\n\n\ndef accuracy(layers, x, y):\n    return float(((np.maximum(x @ layers["fc1"], 0) @ layers["fc2"]).argmax(1) == y).mean())\n\n\ndef compress(layers, sparsity, bits):\n    out = {}\n    for name, w in layers.items():\n        w = np.where(np.abs(w) >= np.quantile(np.abs(w), sparsity), w, 0.0)\n        scale = np.abs(w).max() / (2 ** (bits - 1) - 1)\n        out[name] = np.round(w / scale) * scale\n    return out\n\n\ndef nbytes(layers, bits):\n    """Bytes of the stored artifact: a bitmask of non-zeros plus packed `bits`-bit values per layer."""\n    buffer = io.BytesIO()\n    for w in layers.values():\n        nz = w != 0\n        q = np.round(w[nz] / (np.abs(w).max() / (2 ** (bits - 1) - 1))).astype(np.int16) + 2 ** (bits - 1)\n        packed = np.packbits(np.unpackbits(q.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:].ravel())\n        buffer.write(np.packbits(nz.ravel()).tobytes() + packed.tobytes())\n    return len(buffer.getvalue()), len(gzip.compress(buffer.getvalue()))\n\n\ndef latency_ms(layers, x):\n    times = []\n    for row in x[:50]:\n        start = time.perf_counter(); np.maximum(row @ layers["fc1"], 0) @ layers["fc2"]\n        times.append((time.perf_counter() - start) * 1000)\n    return float(np.median(times))\n\n\ndef load_data():\n    """The digits, from a cached .npz when the experiment provides one (saves the sklearn import)."""\n    cached = os.environ.get("DIGITS_NPZ")\n    if cached:\n        with np.load(cached) as data:\n            return data["x"], data["y"]\n    from sklearn.datasets import load_digits\n    data = load_digits()\n    return data.data / 16.0, data.target\n\n\n@aup.aup_args\ndef main(lr, sparsity, bits, **_):\n    if bits < 3:\n        sys.exit(f"bits={bits}: this quantizer needs at least 3 bits")\n    x, y = load_data()\n    layers = train(x[:1400], y[:1400], lr)\n    dense_bytes = sum(w.size * 4 for w in layers.values())\n    base = {"baseline_score": accuracy(layers, x[1400:], y[1400:]), "baseline_param_count": 64 * 32 + 32 * 10,\n            "baseline_nonzero_params": 64 * 32 + 32 * 10, "baseline_model_bytes": dense_bytes,\n            "baseline_latency_ms": latency_ms(layers, x)}\n    small = compress(layers, sparsity, bits)\n    size, size_gz = nbytes(small, bits)\n    score = accuracy(small, x[1400:], y[1400:])\n    aup.log_metrics(accuracy=score, param_count=64 * 32 + 32 * 10,\n                    nonzero_params=int(sum((w != 0).sum() for w in small.values())),\n                    macs=64 * 32 + 32 * 10, model_bytes=size, model_bytes_gzip=size_gz,\n                    sparsity=float(np.mean([(w == 0).mean() for w in small.values()])), weight_bits=float(bits),\n                    latency_ms=latency_ms(small, x),\n                    layer_sparsity={k: float((w == 0).mean()) for k, w in small.items()},\n                    layer_bits={k: bits for k in small}, **base)\n    return score\n\n\nif __name__ == "__main__":\n    main()\n'

EXPERIMENT = {
    "name": "digits-mlp", "script": "train_digits.py", "proposer": "sequence", "target": "max",
    "n_samples": 12, "n_parallel": 2, "resource": "cpu",
    "job_failure": {"ignore_fail": True, "job_retries": 0},
    "parameter_config": [
        {"name": "lr", "type": "choice", "range": [0.5, 0.02]},
        {"name": "sparsity", "type": "choice", "range": [0.3, 0.8]},
        {"name": "bits", "type": "choice", "range": [2, 4, 8]},
    ],
}


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the digits experiment once for the module; returns the storage URL."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    np.savez(folder / "digits.npz", x=digits.data / 16.0, y=digits.target)
    (folder / "train_digits.py").write_text(TRIAL_SCRIPT)
    experiment = {**EXPERIMENT, "runtime_args": {"env": {"DIGITS_NPZ": str(folder / "digits.npz")}}}
    (folder / "exp.json").write_text(json.dumps(experiment))
    url = f"sqlite:///{folder / 'aup.db'}"
    env = {**os.environ, "AUP_STORAGE": url}
    done = subprocess.run([sys.executable, "-m", "aup", "exp.json"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(run(capsys, *args, "--json"))


def dominated(point: list[float], others: list[list[float]]) -> bool:
    """Brute-force dominance (all objectives to minimise), the reference for the Pareto code."""
    return any(all(o <= p for o, p in zip(other, point)) and any(o < p for o, p in zip(other, point))
               for other in others)


# ------------------------------------------------------------------------------------------------
# Unit tests on synthetic stores


@pytest.fixture(scope="module")
def synthetic_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('syn') / 'aup.db'}"
    make_store(url, "single", n_trials=40, seed=1)
    make_store(url, "multi", n_trials=30, seed=2, multi_objective=True)
    return url


@pytest.mark.parametrize("name", ["single", "multi"])
def test_fast_sql_rows_equal_optuna_api_rows(synthetic_url: str, name: str) -> None:
    import optuna

    experiment, rows = open_store(synthetic_url).load(name)
    study = optuna.load_study(study_name=name, storage=synthetic_url)
    reference = rows_from_frozen(study.get_trials(), experiment.objective_names)
    assert [r.flat() for r in rows] == [r.flat() for r in reference]
    assert experiment.directions == [d.name.lower() for d in study.directions]
    if name == "single":
        assert experiment.best_trials == [study.best_trial.number]
    else:
        assert sorted(experiment.best_trials) == sorted(t.number for t in study.best_trials)


def test_list_best_and_counts_from_sql(synthetic_url: str) -> None:
    experiments = {e.name: e for e in open_store(synthetic_url).experiments()}
    assert experiments["single"].counts == {"COMPLETE": 35, "PRUNED": 4, "FAIL": 1}
    assert experiments["multi"].objective_names == ["score", "model_bytes"]
    _, rows = open_store(synthetic_url).load("single")
    complete = [r for r in rows if r.state == "COMPLETE"]
    assert experiments["single"].best_values == [[max(r.values[0] for r in complete)]]


def test_pareto_front_equals_brute_force() -> None:
    rng = random.Random(3)
    for k in (1, 2, 3, 4):
        rows = [{"number": i, **{f"m{j}": rng.choice([rng.random(), 0.5]) for j in range(k)}} for i in range(120)]
        objectives = [pareto.Objective(f"m{j}", "max" if j == 0 else "min") for j in range(k)]
        points = [[r[o.name] * o.sign for o in objectives] for r in rows]
        expected = {i for i, p in enumerate(points) if not dominated(p, points)}
        assert set(pareto.pareto_front(rows, objectives)) == expected
        assert expected


def test_parse_objectives_and_defaults() -> None:
    parsed = pareto.parse_objectives("score:max, model_bytes, latency_ms:min,sparsity (conv1):max")
    assert [(o.name, o.direction) for o in parsed] == [("score", "max"), ("model_bytes", "min"),
                                                       ("latency_ms", "min"), ("sparsity (conv1)", "max")]
    assert pareto.parse_objectives("loss", {"loss": "minimize"})[0].direction == "min"
    with pytest.raises(UserError, match="expected NAME:max or NAME:min"):
        pareto.parse_objectives("score:best")
    with pytest.raises(UserError, match="twice"):
        pareto.parse_objectives("score,score:min")


def test_where_and_sort() -> None:
    rows = [{"number": 0, "score": 0.9, "compressor": "level", "model_bytes": 300},
            {"number": 1, "score": 0.97, "compressor": "l1filter", "model_bytes": 100},
            {"number": 2, "score": 0.96, "compressor": "level"}]
    assert [r["number"] for r in query.filter_rows(rows, ["score>0.95"])] == [1, 2]
    assert [r["number"] for r in query.filter_rows(rows, ["score>=0.9", "compressor=level"])] == [0, 2]
    assert [r["number"] for r in query.filter_rows(rows, ["compressor~L1"])] == [1]
    assert query.parse_sort("model_bytes") == ("model_bytes", False)  # sizes: smaller first
    assert query.parse_sort("score") == ("score", True)  # other metrics: larger first
    assert query.parse_sort("score:asc") == ("score", False)
    assert query.parse_sort("-model_bytes") == ("model_bytes", True)
    assert [r["number"] for r in query.sort_rows(rows, "model_bytes", False)] == [1, 0, 2]  # missing last
    with pytest.raises(UserError, match="did you mean score"):
        query.filter_rows(rows, ["scor>1"])
    with pytest.raises(UserError, match="expected FIELD OP VALUE"):
        query.parse_where("score")


# ------------------------------------------------------------------------------------------------
# Every command on the real experiment


@pytest.mark.slow
def test_list(real_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    [item] = run_json(capsys, "list", "--storage", real_store)
    assert (item["name"], item["status"], item["trials"]) == ("digits-mlp", "finished", 12)
    assert (item["complete"], item["failed"]) == (8, 4)
    assert item["storage"] == real_store and item["started"] and item["ended"]
    _, rows = open_store(real_store).load("digits-mlp")
    best = max((r for r in rows if r.state == "COMPLETE"), key=lambda r: r.values[0])
    assert item["best_trials"] == [best.number] and item["best_values"] == [[best.values[0]]]
    text = run(capsys, "list", "--storage", real_store)
    assert "digits-mlp" in text and "finished" in text and "8/0/4" in text and real_store in text


@pytest.mark.slow
def test_show(real_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "show", "digits-mlp", "--storage", real_store)
    assert data["config"]["name"] == "digits-mlp" and data["progress"]["complete"] == 8
    [failure] = data["failures"]
    assert failure["count"] == 4 and "needs at least 3 bits" in failure["reason"]
    assert sorted(failure["trials"]) == sorted(n for n, b in _params(real_store, "bits").items() if b == 2)
    [best] = data["best"]
    assert best["score"] == max(r["score"] for r in _complete_rows(real_store))
    text = run(capsys, "show", "digits-mlp", "--storage", real_store)
    assert "Best trial" in text and "needs at least 3 bits" in text and '"parameter_config"' in text


def _complete_rows(url: str) -> list[dict[str, Any]]:
    return [r.flat() for r in open_store(url).load("digits-mlp")[1] if r.state == "COMPLETE"]


def _params(url: str, name: str) -> dict[int, Any]:
    return {r.number: r.params[name] for r in open_store(url).load("digits-mlp")[1]}


@pytest.mark.slow
def test_compare(real_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "compare", "digits-mlp", "--storage", real_store)
    assert len(rows) == 8 and {r["lr"] for r in rows} == {0.5, 0.02}
    same_lr = run_json(capsys, "compare", "digits-mlp", "--where", "lr=0.5", "--storage", real_store)
    assert len(same_lr) == 4 and all("lr" not in r for r in same_lr)  # equal everywhere: hidden by default
    assert rows == sorted(rows, key=lambda r: -r["score"])  # default order: best first
    for row in rows:
        assert {"bits", "param:sparsity", "param_count", "nonzero_params", "macs", "model_bytes",
                "latency_ms"} <= set(row)
        assert row["model_bytes_ratio"] == pytest.approx(row["model_bytes"] / (4 * (64 * 32 + 32 * 10)))
    everything = run_json(capsys, "compare", "digits-mlp", "--all", "--all-params", "--storage", real_store)
    assert len(everything) == 12 and {r["state"] for r in everything} == {"COMPLETE", "FAIL"}
    small = run_json(capsys, "compare", "digits-mlp", "--where", "score>0.8", "--where", "lr=0.5", "--sort", "model_bytes", "--all-params",
                     "--storage", real_store)
    assert [r["param:sparsity"] for r in small] == [0.3, 0.3]
    assert small[0]["model_bytes"] < small[1]["model_bytes"]
    numbers = [r["number"] for r in rows[:2]]
    side = run(capsys, "compare", "digits-mlp", *map(str, numbers), "--storage", real_store)
    assert f"trial {numbers[0]}" in side and "sparsity[fc1]" in side and "bits[fc2]" in side
    assert re.search(r"model_bytes .*\(0\.\d+x\)", side)  # the ratio to the uncompressed model


@pytest.mark.slow
def test_pareto(real_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    complete = _complete_rows(real_store)
    for spec, objectives in (("score:max,model_bytes:min", [("score", -1), ("model_bytes", 1)]),
                             ("score,nonzero_params,latency_ms", [("score", -1), ("nonzero_params", 1),
                                                                  ("latency_ms", 1)]),
                             ("score:max", [("score", -1)])):
        data = run_json(capsys, "pareto", "digits-mlp", "--objectives", spec, "--storage", real_store)
        points = {r["number"]: [r[name] * sign for name, sign in objectives] for r in complete}
        expected = {n for n, p in points.items() if not dominated(p, list(points.values()))}
        assert {r["number"] for r in data["trials"]} == expected
    default = run_json(capsys, "pareto", "digits-mlp", "--storage", real_store)
    assert default["objectives"] == ["score:max", "model_bytes:min"]
    text = run(capsys, "pareto", "digits-mlp", "--storage", real_store)
    assert "Pareto front (score:max, model_bytes:min)" in text
    assert main(["pareto", "digits-mlp", "--objectives", "score,model_byte", "--storage", real_store]) == 2
    assert "did you mean model_bytes" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "json"])
def test_export(real_store: str, tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"trials.{kind}"
    assert main(["export", "digits-mlp", "--format", kind, "-o", str(out), "--storage", real_store]) == 0
    text = out.read_text()
    records = list(csv.DictReader(io.StringIO(text))) if kind == "csv" else json.loads(text)
    assert len(records) == 12
    for record in records:
        assert {"number", "state", "score", "lr", "bits", "param:sparsity", "model_bytes", "model_bytes_ratio",
                "sparsity[fc1]", "bits[fc2]", "status_reason", "baseline_model_bytes"} <= set(record)
    failed = [r for r in records if r["state"] == "FAIL"]
    assert len(failed) == 4 and all("at least 3 bits" in r["status_reason"] for r in failed)
    by_number = {int(r["number"]): r for r in records}
    for row in _complete_rows(real_store):
        assert float(by_number[row["number"]]["model_bytes"]) == row["model_bytes"]


def _plotly_traces(html: str) -> list[dict[str, Any]]:
    """The trace list passed to Plotly.newPlot in a written HTML file."""
    start = html.index("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    position = html.index(",", start) + 1  # skip the div id
    while html[position].isspace():
        position += 1
    traces, _ = decoder.raw_decode(html, position)
    return traces


@pytest.mark.slow
def test_plot_html_has_points_and_front(real_store: str, tmp_path: Path) -> None:
    out = tmp_path / "plot.html"
    assert main(["plot", "digits-mlp", "-o", str(out), "--storage", real_store]) == 0
    html = out.read_text()
    assert "<script src=\"https://cdn" not in html  # plotly.js embedded: the file opens offline
    traces = {t["name"]: t for t in _plotly_traces(html)}
    complete = _complete_rows(real_store)
    trials = traces["trial"]
    assert sorted(trials["customdata"]) == sorted(r["number"] for r in complete)
    by_number = {r["number"]: r for r in complete}
    for number, x, y in zip(trials["customdata"], _values(trials["x"]), _values(trials["y"])):
        assert (x, y) == (by_number[number]["model_bytes"], by_number[number]["score"])
    front_name = next(name for name in traces if name.startswith("Pareto front"))
    points = {r["number"]: [-r["score"], r["model_bytes"]] for r in complete}
    expected = {n for n, p in points.items() if not dominated(p, list(points.values()))}
    assert set(traces[front_name]["customdata"]) == expected
    assert "best so far" in traces
    assert '"type":"log"' in html.replace(" ", "") and "model size [bytes]" in html


def _values(data: Any) -> list[float]:
    """Plotly may store arrays as {dtype, bdata} (base64) or plain lists."""
    if isinstance(data, dict):
        import base64

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


@pytest.mark.slow
def test_plot_png_marks_the_front(real_store: str, tmp_path: Path) -> None:
    """Render the figure, then check the PNG's pixels: front points are red, other trials blue."""
    import matplotlib.image
    from matplotlib.colors import to_rgb

    from aup.views import plot

    out = tmp_path / "plot.png"
    assert main(["plot", "digits-mlp", "-o", str(out), "--storage", real_store]) == 0
    pixels = matplotlib.image.imread(out)[:, :, :3]
    experiment, trials = open_store(real_store).load("digits-mlp")
    data = plot.plot_data(experiment, trials)
    figure = plot.matplotlib_figure(data)
    plot.save_png(figure, tmp_path / "again.png")  # saving lays the figure out: transforms are final now
    assert np.array_equal(matplotlib.image.imread(tmp_path / "again.png")[:, :, :3], pixels)
    assert pixels.shape[:2] == (int(figure.get_figheight() * plot.PNG_DPI), int(figure.get_figwidth() * plot.PNG_DPI))
    trade = figure.axes[0]
    assert trade.get_xscale() == "log" and "model size (log scale)" in trade.get_xlabel()
    ticks = [t.get_text() for t in trade.get_xticklabels() if t.get_text()]
    assert ticks and all(t.endswith("B") for t in ticks)  # sizes in their unit (kB), not raw numbers
    assert {t.get_text() for t in trade.texts} >= {str(p["number"]) for p in data.front}
    front = {p["number"] for p in data.front}
    assert front and len(front) < len(data.points)  # both kinds of points are checked below

    def colour_at(x: float, y: float) -> np.ndarray:
        px, py = trade.transData.transform((x, y))
        row, col = int(round(pixels.shape[0] - py)), int(round(px))
        return pixels[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3).mean(axis=0)

    for point in data.points:
        colour = colour_at(point["x"], point["y"])
        if point["number"] in front:
            assert np.abs(colour - to_rgb(plot.FRONT_COLOUR)).max() < 0.15, point
        else:
            assert np.abs(colour - to_rgb(plot.FRONT_COLOUR)).max() > 0.3, point


@pytest.mark.slow
def test_user_errors_are_one_line_exit_2(real_store: str, tmp_path: Path) -> None:
    env = {**os.environ, "AUP_STORAGE": real_store}
    for args in (["show", "digits-mpl"], ["compare", "digits-mlp", "99"], ["compare", "digits-mlp", "--where", "x"],
                 ["plot", "digits-mlp", "-o", "plot.pdf"]):
        done = subprocess.run([sys.executable, "-m", "aup", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "aup", "show", "digits-mpl"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "did you mean 'digits-mlp'" in done.stderr


def test_missing_store_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no results store"):
        open_store(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def test_list_without_any_run_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nothing' / 'aup.db'}"
    assert run_json(capsys, "list", "--storage", url) == []
    assert "No experiments" in run(capsys, "list", "--storage", url)
