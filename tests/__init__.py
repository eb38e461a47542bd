"""The test suite: a package, imported from the repository root (pytest `pythonpath = ["."]`) as ``tests.<lane>.<module>``."""
