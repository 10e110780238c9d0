"""Steering vectors: extraction methods, the method-name grammar, cleaning and storage.

Importing this package is cheap; the stage itself is `steerops.vectors.command`.
"""

from steerops.vectors.store import check_hidden_size, load_vectors, save_vectors, vectors_for

__all__ = ["check_hidden_size", "load_vectors", "save_vectors", "vectors_for"]
