"""`steerops probe inputs`: the probe stage's optional input files as a record DVC depends on.

DVC cannot list an optional file among a stage's dependencies (a null path does not
interpolate), so `probe_train` depends on <out>/probe_inputs.json: the confounds file as
params spell it and its md5, or null. DVC writes it on every repro (`always_changed`, like
`models`) and compares its content, so the same file leaves `probe_train` as it was, in any
checkout (the path is not made absolute).
"""

from __future__ import annotations

import argparse

INPUTS_FILE = "probe_inputs.json"


def run(args: argparse.Namespace) -> None:
    """The command (registered by `probes.command`, kept here so that DVC's dependency check
    sees only what it reads)."""
    from steerops.cli import load_params_for

    write_inputs_record(load_params_for(args))


def write_inputs_record(params) -> None:
    """Write <out>/probe_inputs.json unless it already holds the same record."""
    from steerops.io import file_md5, read_json, write_json
    from steerops.probes.data import param_file

    value = params.probes.confounds
    # a path that names no file stops here, before anything is written
    confounds = param_file(params, value, "probes.confounds")
    record = {"confounds": None}
    if confounds is not None:
        record["confounds"] = {"path": str(value), "md5": file_md5(confounds)}
    path = params.out / INPUTS_FILE
    if not (path.is_file() and read_json(path) == record):  # by hand: an unchanged file stays
        write_json(path, record)
    what = "none" if confounds is None else f"{confounds} ({record['confounds']['md5'][:12]})"
    print(f"probes.confounds: {what} -> {path}")
