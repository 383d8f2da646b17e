"""Test trial that fails: a Python exception after printing something."""
print("starting")
print(1 / 0)
