"""Pruners: one module per algorithm family, each a criterion on top of ``base.Pruner``.

Modules are imported on demand through ``aup.compression.registry``; nothing is imported here.
"""
