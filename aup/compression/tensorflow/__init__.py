"""Keras 3 compressors (``"framework": "tensorflow"``): the level pruner.

Importing this package does not import TensorFlow or Keras; its modules do (``pruners`` holds the
classes the registry names, ``artifact.load_compressed`` reads an exported artifact back).

Keras writes ``keras.json`` into ``$KERAS_HOME`` (default ``~/.keras``) when it is first imported.
When ``KERAS_HOME`` is unset this package points it at aup's own folder, ``.aup/cache/keras`` under
the working directory when ``.aup`` exists there, else ``aup-cache/keras`` in the temp dir, so a
script run by hand leaves the user's home alone (``aup run`` sets it for every trial). It must be
imported before Keras to have an effect. ``MPLCONFIGDIR`` likewise (``aup-cache/matplotlib``):
importing TensorFlow imports matplotlib, which would write ``~/.cache/matplotlib`` and
``~/.config/matplotlib``.
"""
from __future__ import annotations

import os

from aup.caches import aup_cache_dir

os.environ.setdefault("KERAS_HOME", aup_cache_dir("keras"))
os.environ.setdefault("MPLCONFIGDIR", aup_cache_dir("matplotlib"))
