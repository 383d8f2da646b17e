"""`aup plot` keeps matplotlib's font cache and config out of the user's home directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DRAW = """
from aup.views.plot import PlotData, matplotlib_figure
data = PlotData(title="t", x="model_bytes", y="score", y_direction="maximize",
                points=[{"number": 0, "x": 10.0, "y": 0.5}], front=[{"number": 0, "x": 10.0, "y": 0.5}],
                history=[{"number": 0, "value": 0.5, "best": 0.5}])
matplotlib_figure(data).savefig("out.png")
"""


def test_plotting_writes_no_matplotlib_files_into_home(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / ".aup").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", DRAW], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (work / "out.png").stat().st_size > 0
    assert not any(home.rglob("*")), sorted(str(p) for p in home.rglob("*"))
    assert (work / ".aup" / "cache" / "matplotlib").is_dir()
