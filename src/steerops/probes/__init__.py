"""Preference probes: ridge probes from task activations to scalar scores (`train`),
Thurstonian utilities from pairwise choices (`thurstonian`), and how probe outputs move
under system-prompt conditions against behaviour (`ood`). `ridge`, `thurstonian`,
`confounds` and `ood` are pure numpy/scipy; the `*stage`/`train` modules do the I/O."""
