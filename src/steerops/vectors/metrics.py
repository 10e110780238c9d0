"""How well a unit vector separates the two classes of activations it came from.

Examples are projected onto the vector; the threshold is the midpoint between the mean
projections of the positive and negative train examples, and an example counts as correct
when positives fall above it and negatives below. Validation examples use the train
midpoint, so val_acc measures generalisation of both direction and threshold; so do the
accuracies on named halves of val (`heldout.split_val`), from the same projections.
"""

from __future__ import annotations

import torch


def separation(
    unit: torch.Tensor,
    acts: torch.Tensor,
    train_pos: torch.Tensor,
    train_neg: torch.Tensor,
    val_pos: torch.Tensor,
    val_neg: torch.Tensor,
    **halves: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float | None]:
    """`acts` is [n, d]; the index tensors pick rows. Returns midpoint, train_acc, val_acc
    and `<name>_acc` for each named (positive rows, negative rows) in `halves`."""
    proj, midpoint = _projected(unit, acts, train_pos, train_neg)
    return {
        "midpoint": float(midpoint),
        "train_acc": _accuracy(proj, midpoint, train_pos, train_neg),
        "val_acc": _accuracy(proj, midpoint, val_pos, val_neg),
        **{f"{name}_acc": _accuracy(proj, midpoint, *rows) for name, rows in halves.items()},
    }


def hits(
    unit: torch.Tensor,
    acts: torch.Tensor,
    train_pos: torch.Tensor,
    train_neg: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
) -> list[float]:
    """1/0 per row of `pos` then `neg`: classified right by `separation`'s rule."""
    proj, midpoint = _projected(unit, acts, train_pos, train_neg)
    return _correct(proj, midpoint, pos, neg).float().tolist()


def _projected(
    unit: torch.Tensor, acts: torch.Tensor, train_pos: torch.Tensor, train_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(every row's projection on `unit`, the train classes' midpoint)."""
    proj = acts.float() @ unit.float()
    return proj, 0.5 * (proj[train_pos].mean() + proj[train_neg].mean())


def _correct(
    proj: torch.Tensor, midpoint: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    return torch.cat([proj[pos] > midpoint, proj[neg] <= midpoint])


def _accuracy(
    proj: torch.Tensor, midpoint: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> float | None:
    total = len(pos) + len(neg)
    if total == 0:
        return None
    return float(_correct(proj, midpoint, pos, neg).sum()) / total
