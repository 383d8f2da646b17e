"""Keras must not write ``~/.keras``: aup points KERAS_HOME at its own folder when the user has not."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str, home: Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME",
                                                             "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"), PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    (home / "tmp").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_package_import_sets_keras_home_under_aup_folder_or_temp(tmp_path: Path) -> None:
    code = "import os, sys, aup.compression.tensorflow; print(os.environ['KERAS_HOME']); print('keras' in sys.modules)"
    out = _run(code, tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "tmp" / "aup-cache" / "keras"), "False"]
    (tmp_path / ".aup").mkdir()
    out = _run(code, tmp_path, tmp_path)
    assert out.stdout.split()[0] == str(tmp_path / ".aup" / "cache" / "keras")
    out = _run(code, tmp_path, tmp_path, KERAS_HOME=str(tmp_path / "mine"))
    assert out.stdout.split()[0] == str(tmp_path / "mine")  # the user's setting wins


@pytest.mark.slow
def test_importing_the_pruner_and_keras_leaves_home_alone(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    code = "import aup.compression.tensorflow.pruners, keras; print(keras.config.backend())"
    out = _run(code, tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / ".keras").exists()
    assert (tmp_path / "tmp" / "aup-cache" / "keras" / "keras.json").is_file()


def test_package_import_sets_mplconfigdir_under_aup_folder(tmp_path: Path) -> None:
    """TensorFlow imports matplotlib: its config and font cache go to aup's folder, not ~/.config, ~/.cache."""
    code = "import os, aup.compression.tensorflow; print(os.environ['MPLCONFIGDIR'])"
    out = _run(code, tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "tmp" / "aup-cache" / "matplotlib")]
    out = _run(code, tmp_path, tmp_path, MPLCONFIGDIR=str(tmp_path / "mine"))
    assert out.stdout.split() == [str(tmp_path / "mine")]


@pytest.mark.slow
def test_importing_tensorflow_through_aup_leaves_home_alone(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    code = "import aup.compression.tensorflow.pruners, tensorflow, matplotlib; matplotlib.get_cachedir()"
    out = _run(code, tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / ".cache").exists() and not (tmp_path / ".config").exists()
