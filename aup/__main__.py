"""``python -m aup EXPERIMENT.json`` runs an experiment, like ``aup run``."""
from aup.cli import entry

if __name__ == "__main__":
    entry()
