"""Steered generation and its evaluation: the per-row steering engine (`engine`), the
evaluator that scores configs against a baseline (`evaluate`), the results log (`store`),
plots and the `steerops steer` stage (`command`).

Importing the package is cheap; import the submodule you need.
"""
