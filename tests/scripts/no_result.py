"""Test trial that exits 0 without reporting a result."""
import sys

print("config", sys.argv[1])
