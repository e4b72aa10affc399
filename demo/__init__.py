"""The embedded demo model: data from music21's public-domain corpus, training (torch, `[train]` extra), evaluation.

Nothing in `midillm_lite` imports this package; only `make demo-data` / `make demo-model` run it.
"""
