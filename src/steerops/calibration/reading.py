"""What a calibration record says, in words the calibrate command and the report share:
the massive set with its layers, and the dims just under its bar. The set rests on a sharp
cut (peak |x| > threshold and > ratio x the layer's median |x|); a dim a little under it at
some layers is where the cut falls, which a researcher needs to see before trusting "one
massive dim"."""

from __future__ import annotations

from typing import Any

NEAR = 2.0  # "near the bar": within this factor under both the peak and the ratio bars


def massive_spans(aggregate: dict[str, Any]) -> list[str]:
    """Each massive dim with its layers ("507 at layers 11-27"), in the set's order."""
    layers = aggregate.get("massive_layers") or {}
    return [
        f"{d} at {layers_words(layers.get(str(d), []))}"
        for d in aggregate.get("massive_dims") or []
    ]


def _rule(record: dict[str, Any]) -> dict[str, Any]:
    """The record's `massive_rule` ({} where an older record has none)."""
    return record.get("aggregate", {}).get("massive_rule") or {}


def _num(value: Any) -> str:
    return "?" if value is None else f"{value:g}"


def rule_words(rule: dict[str, Any]) -> str:
    """The massive rule of a record's `massive_rule` ("peak |x| > 100 and > 1000x the
    layer's median |x|, in at least 2 calibration sequences")."""
    threshold, ratio = (rule.get(k) for k in ("threshold", "ratio"))
    words = f"peak |x| > {_num(threshold)} and > {_num(ratio)}x the layer's median |x|"
    sequences = rule.get("min_sequences")  # an older record has none: one token sufficed
    if sequences is not None and sequences > 1:
        words += f", in at least {sequences} calibration sequences"
    return words


def rare_line(record: dict[str, Any]) -> str:
    """The dims over both bars in fewer sequences than the rule asks, left out of the massive
    set, each at the layer of its largest peak ("11 at layer 3 (peak 4,000 on 'x'@130 of
    sequence 2; 43x in its 2nd sequence by peak)"), or "" when none."""
    k = _rule(record).get("min_sequences")
    found: dict[int, dict[str, Any]] = {}
    for layer, stats in sorted(record.get("layers", {}).items(), key=lambda kv: int(kv[0])):
        for dim, peak in (stats.get("massive_rare") or {}).items():
            hit = found.setdefault(int(dim), {"layers": [], "peak": peak, "at": int(layer)})
            hit["layers"].append(int(layer))
            if abs(float(peak["value"])) > abs(float(hit["peak"]["value"])):
                hit["peak"], hit["at"] = peak, int(layer)
    parts = []
    for dim, hit in found.items():
        peak = hit["peak"]
        token = f" on {peak['token']!r}@{peak['position']}" if peak.get("token") is not None else ""
        at = f" at layer {hit['at']}" if len(hit["layers"]) > 1 else ""
        again = peak.get("recurring_ratio")
        parts.append(
            f"{dim} at {layers_words(hit['layers'])} (peak {abs(float(peak['value'])):,.0f}"
            f"{token} of sequence {peak['sequence']}{at}"
            + (
                f"; {again:,.0f}x in its {_ordinal(k)} sequence by peak"
                if again is not None and k
                else ""
            )
            + ")"
        )
    return "; ".join(parts)


def rare_words(record: dict[str, Any]) -> str:
    """What the rare dims are, by the record's rule ("over both bars in fewer than 2
    calibration sequences")."""
    k = _rule(record).get("min_sequences")
    return f"over both bars in fewer than {k} calibration sequences"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _bars(record: dict[str, Any]) -> tuple[Any, Any]:
    """The massive rule's peak and ratio bars (None each where an older record has none)."""
    rule = _rule(record)
    return rule.get("threshold"), rule.get("ratio")


def near_misses(record: dict[str, Any], within: float = NEAR) -> dict[int, dict[str, Any]]:
    """{dim: {"layers", "ratio", "peak", "under", "tokens"}} of the peaks within `within`x
    under the massive bar at a layer where the dim is not massive (each layer's strongest
    peaks, `top_max`), strongest first; `under` names the bars ("peak", "ratio") it missed at
    every one of those layers, `tokens` the layers each peak's token@position held (a near
    miss on the first token is another thing than one inside the text). A dim massive at
    other layers can be near the bar at these."""
    threshold, ratio = _bars(record)
    if threshold is None or ratio is None:
        return {}
    found: dict[int, dict[str, Any]] = {}
    for layer, stats in sorted(record.get("layers", {}).items(), key=lambda kv: int(kv[0])):
        # a rare dim passed both bars: `rare_line` says it, not the near misses
        rare = {int(d) for d in stats.get("massive_rare") or {}}
        massive = set(stats.get("massive_dims") or []) | rare
        for peak in stats.get("top_max") or []:
            value, dim = abs(float(peak["value"])), int(peak["dim"])
            near = value > threshold / within and float(peak["ratio"]) > ratio / within
            if dim in massive or not near:
                continue
            missed = {"peak"} if value <= threshold else set()
            missed |= {"ratio"} if float(peak["ratio"]) <= ratio else set()
            hit = found.setdefault(
                dim,
                {
                    "layers": [],
                    "ratio": 0.0,
                    "peak": 0.0,
                    "under": missed,
                    "tokens": {},
                    "ratio_layer": None,
                    "peak_layer": None,
                },
            )
            hit["layers"].append(int(layer))
            if peak.get("token") is not None:  # an older record names none
                where = f"{peak['token']!r}@{peak.get('position')}"
                hit["tokens"].setdefault(where, []).append(int(layer))
            if float(peak["ratio"]) > hit["ratio"]:
                hit["ratio"], hit["ratio_layer"] = float(peak["ratio"]), int(layer)
            if value > hit["peak"]:
                hit["peak"], hit["peak_layer"] = value, int(layer)
            hit["under"] = hit["under"] & missed
    for hit in found.values():
        hit["under"] = sorted(hit["under"])
    return dict(sorted(found.items(), key=lambda kv: -kv[1]["ratio"]))


# which bar a near miss fell under, at every one of its layers
UNDER = {
    ("peak",): "under the peak bar",
    ("ratio",): "under the ratio bar",
    ("peak", "ratio"): "under both bars",
    (): "under one bar or the other at each layer",
}


def near_rule(record: dict[str, Any], within: float = NEAR) -> str:
    """What "near the bar" means for this record's rule ("peak |x| > 50 and > 500x")."""
    threshold, ratio = _bars(record)
    if threshold is None or ratio is None:
        return "no rule recorded"
    return f"peak |x| > {threshold / within:g} and > {ratio / within:g}x"


def near_line(record: dict[str, Any], within: float = NEAR) -> str:
    """The near misses in one phrase ("247 at layers 11-12 (peak up to 1,825 at layer 12,
    ratio up to 967x at layer 11: under the ratio bar); ..."), or "none"."""
    misses = near_misses(record, within)
    return (
        "; ".join(
            f"{dim} at {layers_words(hit['layers'])} (peak up to {hit['peak']:,.0f}"
            f"{_at(hit, 'peak_layer')}, ratio up to {hit['ratio']:,.0f}x"
            f"{_at(hit, 'ratio_layer')}: {UNDER[tuple(hit['under'])]}{_tokens(hit)})"
            for dim, hit in misses.items()
        )
        or "none"
    )


def _at(hit: dict[str, Any], key: str) -> str:
    """ " at layer 28" where a near miss spans several layers: its largest peak and its
    largest ratio may come from different ones."""
    return f" at layer {hit[key]}" if len(hit["layers"]) > 1 and hit.get(key) is not None else ""


def _tokens(hit: dict[str, Any]) -> str:
    """ "; largest on '<|im_start|>'@0", by layers when the peaks sat on several tokens, or
    "". The record keeps one token per dim and layer, its largest: the dim may be nearly as
    large on others (a sink's first token in every sequence, say)."""
    tokens = hit.get("tokens") or {}
    if len(tokens) == 1:
        return f"; largest on {next(iter(tokens))}"
    return (
        "; largest on " + ", ".join(f"{t} at {layers_words(ls)}" for t, ls in tokens.items())
        if tokens
        else ""
    )


def layers_words(layers: list[int]) -> str:
    """ "layer 3" or "layers 2-7, 28"."""
    return f"layer{'s' if len(layers) > 1 else ''} {layer_span(layers)}"


def layer_span(layers: list[int]) -> str:
    """[11, 12, 13, 20] -> "11-13, 20"."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"
