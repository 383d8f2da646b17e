"""``python -m aup EXPERIMENT.json`` runs an experiment, like ``aup run``."""
from aup.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
