"""Compare two activation dumps and name the first tensor that goes wrong.

Only real (unpadded) positions are compared: the reference's inputs.attention_mask says which. Each
step gets its max abs diff, max rel diff and cosine; the first beyond `atol + rtol * |reference|` is
named with the inputs of that step that still agree, and with what the mismatch looks like where that
can be told: a transposed shape, a tensor that matches a *different* reference step (taken before the
LayerNorm instead of after, before the GELU, ...), a dtype difference, tensors missing on either side.
Needs only numpy (and safetensors to read a dump file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minibert.tools.steps import real_positions, step_inputs
from minibert.tools.terminal import printable


@dataclass
class Row:
    name: str
    status: str  # "ok", "FAIL", "missing", "shape"
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    cosine: float = float("nan")
    note: str = ""


@dataclass
class Report:
    rows: list[Row]
    atol: float
    rtol: float
    first_failure: str | None = None
    agreeing_inputs: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    only_in_candidate: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_failure is None and not any(r.status == "missing" for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "atol": self.atol,
            "rtol": self.rtol,
            "first_failure": self.first_failure,
            "agreeing_inputs": self.agreeing_inputs,
            "diagnosis": self.diagnosis,
            "only_in_candidate": self.only_in_candidate,
            "tensors": [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in r.__dict__.items()} for r in self.rows
            ],
        }


def real_values(t: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The values of `t` at real positions (minibert.tools.steps.real_positions), flattened in order."""
    if mask is None:
        return t.reshape(-1)
    return t[np.broadcast_to(real_positions(t.shape, mask), t.shape)]


def _differences(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float, float]:
    with np.errstate(all="ignore"):  # a broken port's infinities and NaNs are reported, not warned about
        return _differences_of(ref, cand)


def _differences_of(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(cand - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if diff.size else 0.0
    denominator = float(np.linalg.norm(ref) * np.linalg.norm(cand))
    cosine = float(np.dot(ref, cand) / denominator) if denominator else float(np.array_equal(ref, cand))
    return max_abs, max_rel, cosine


def compare(reference: dict, candidate: dict, atol: float = 1e-5, rtol: float = 1e-4) -> Report:
    """Compare dumps (name -> numpy array, the reference in computation order)."""
    mask = reference.get("inputs.attention_mask")
    names = [n for n in reference if not n.startswith("inputs.")]
    num_layers = len({n.split(".")[1] for n in names if n.startswith("layers.")})
    rows, report = [], Report([], atol, rtol)
    values = {}
    for name in names:
        if name not in candidate:
            rows.append(Row(name, "missing", note="missing from the candidate"))
            continue
        ref, cand = reference[name], candidate[name]
        note = f"dtype {cand.dtype} against {ref.dtype}" if cand.dtype != ref.dtype else ""
        if cand.shape != ref.shape:
            transposed = ref.ndim >= 2 and cand.shape == ref.shape[:-2] + ref.shape[:-3:-1]
            what = "the transpose of the reference's" if transposed else "not the reference's"
            rows.append(Row(name, "shape", note=f"shape {cand.shape} is {what} {ref.shape}"))
            continue
        r, c = real_values(ref.astype(np.float64), mask), real_values(cand.astype(np.float64), mask)
        values[name] = (r, c)
        max_abs, max_rel, cosine = _differences(r, c)
        good = bool(np.all(np.abs(c - r) <= atol + rtol * np.abs(r))) and not np.isnan(c).any()
        rows.append(Row(name, "ok" if good else "FAIL", max_abs, max_rel, cosine, note))
    report.rows = rows
    report.only_in_candidate = [n for n in candidate if n not in reference and not n.startswith("inputs.")]

    first = next((r for r in rows if r.status in ("FAIL", "shape")), None)
    if first is None:
        return report
    report.first_failure = first.name
    status = {r.name: r.status for r in rows}
    report.agreeing_inputs = [
        n
        for n in step_inputs(first.name, num_layers)
        if status.get(n) == "ok" or (n.startswith("inputs.") and n in candidate)
    ]
    if first.status == "shape":
        report.diagnosis.append(f"{first.name}: {first.note}")
    elif first.name in values:
        report.diagnosis += _looks_like(first.name, values[first.name][1], values, reference, mask, names, atol, rtol)
    if first.note:
        report.diagnosis.append(f"{first.name}: {first.note}")
    return report


def _looks_like(name, cand, values, reference, mask, names, atol, rtol) -> list[str]:
    """Reference steps near `name` that the candidate's tensor matches better than its own."""
    own = _differences(values[name][0], cand)[0]
    at = names.index(name)
    found = []
    for other in names[max(0, at - 6) : at + 7]:
        if other == name or reference[other].shape != reference[name].shape:
            continue
        r = real_values(reference[other].astype(np.float64), mask)
        max_abs, _, cosine = _differences(r, cand)
        if np.all(np.abs(cand - r) <= atol + rtol * np.abs(r)) or (max_abs < own / 100):
            found.append(
                f"the candidate's {name} matches the reference's {other} (max abs diff {max_abs:.3g}, "
                f"cosine {cosine:.6f}): taken at the wrong point?"
            )
    return found


def format_report(report: Report) -> str:
    width = max([len(r.name) for r in report.rows] + [6])
    lines = [f"{'tensor':<{width}}  {'max abs':>10}  {'max rel':>10}  {'cosine':>10}  status"]
    for r in report.rows:
        numbers = (
            "" if r.status in ("missing", "shape") else f"{r.max_abs:>10.3g}  {r.max_rel:>10.3g}  {r.cosine:>10.7f}"
        )
        lines.append(f"{r.name:<{width}}  {numbers:<34}  {r.status}{'  ' + r.note if r.note else ''}")
    lines.append("")
    if report.ok:
        lines.append(f"all {len(report.rows)} tensors agree (atol {report.atol:g}, rtol {report.rtol:g})")
    else:
        failing = sum(r.status != "ok" for r in report.rows)
        if report.first_failure:
            lines.append(
                f"first tensor beyond tolerance (atol {report.atol:g}, rtol {report.rtol:g}): {report.first_failure}"
            )
            if report.agreeing_inputs:
                lines.append(f"its inputs that still agree: {', '.join(report.agreeing_inputs)}")
        lines += [f"  {d}" for d in report.diagnosis]
        missing = [r.name for r in report.rows if r.status == "missing"]
        if missing:
            lines.append(
                f"missing from the candidate: {len(missing)} ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''})"
            )
        lines.append(f"{failing} of {len(report.rows)} tensors disagree or are missing")
    if report.only_in_candidate:
        lines.append(f"only in the candidate (not compared): {', '.join(report.only_in_candidate[:5])}")
    return "\n".join(printable(line) for line in lines)  # tensor names come from the files
