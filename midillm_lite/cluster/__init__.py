"""Dataset-scale generation: a prompts file run on a Ray cluster, resumable and exactly-once (`gen --cluster`).

`plan` owns the output folder's bookkeeping (manifest, per-line folders, completion,
summary) and needs no Ray; `ray_run` owns the workers and the dispatch loop.
"""
