"""The subcommands, one per pipeline stage, and the module that registers each."""

from __future__ import annotations

# subcommand -> ("module[:function]" whose function, default `register`, adds the subparser,
# one-line help); pipeline order.
STAGES: dict[str, tuple[str, str]] = {
    "toy": (
        "steerops.toy.command",
        "build the embedded toy world (trained model, trait data, judge)",
    ),
    "smollm2": (
        "steerops.smollm2.command",
        "build the SmolLM2-135M-Instruct model folder from the installed package",
    ),
    "models": (
        "steerops.models.command",
        "record each model variant's id, revision and content fingerprint for DVC",
    ),
    "generate": (
        "steerops.generate.command",
        "complete a trait's positive/negative prompts (optionally vetted)",
    ),
    "extract": (
        "steerops.extract.command",
        "extract pooled activations (traits, or a task set for probes)",
    ),
    "vectors": ("steerops.vectors.command", "compute steering vectors from trait activations"),
    "calibrate": (
        "steerops.calibration.command",
        "find a variant's massive-activation dims (calibration.json)",
    ),
    "clean": (
        "steerops.vectors.command:register_clean",
        "remove massive dims from steering vectors (before or after fitting)",
    ),
    "steer": (
        "steerops.steering.command",
        "steer with vector methods over layers x coefficients and score them",
    ),
    "search": (
        "steerops.search.command",
        "Optuna search of the steering coefficient under a coherence constraint",
    ),
    "dashboard": (
        "steerops.search.command:register_dashboard",
        "optuna-dashboard on the search studies (best trial = the search's choice)",
    ),
    "report": (
        "steerops.report.command",
        "tables and plots from tracked steering and search results",
    ),
    "probe": (
        "steerops.probes.command",
        "train preference probes and analyse them under OOD conditions",
    ),
}
