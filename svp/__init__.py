"""Composition root: puts the api and the worker together (embedded mode, the CLI, the demo).

``app`` never imports ``worker``; this package may import both.
"""
