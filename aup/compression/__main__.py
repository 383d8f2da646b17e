"""``python -m aup.compression EXP.json [--automatic] [--launch_dashboard]`` (Auptimizer's command).

The implementation is :mod:`aup.compression_cli` (the command-line layer); this file only runs it,
so importing ``aup.compression`` never pulls in the runner.
"""
from aup.compression_cli import entry

if __name__ == "__main__":
    entry()
