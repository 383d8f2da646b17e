"""Keras 3 compressors (``"framework": "tensorflow"``): the level pruner.

Importing this package does not import TensorFlow or Keras; its modules do (``pruners`` holds the
classes the registry names, ``artifact.load_compressed`` reads an exported artifact back).
"""
