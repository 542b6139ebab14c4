"""The physical layer: the physical planner and every kernel that runs a plan.

operators.py builds a stage per plan node (generators.py those that bind variables) and runs
nested queries; expressions.py compiles typed expressions (compiled.py, calls.py), kernels.py
the fused elementwise kernels, sources.py filtered and limited sources, windows.py the count and
time windows; chunk.py is the columnar batch of rows that flows between stages.
"""
