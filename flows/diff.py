"""Flow diffs for hot swap (added / changed / moved / removed modules, rewired ports).

Not built yet: the hot-swap issue computes ``diff(old: Flow, new: Flow)`` here, in the
core, so the runner only applies it.
"""
