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
    not_compared: list[str] = field(default_factory=list)  # reference steps left out by `subset`

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
            "not_compared": self.not_compared,
            "tensors": [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in r.__dict__.items()} for r in self.rows
            ],
        }


def real_values(t: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The values of `t` at real positions (minibert.tools.steps.real_positions), flattened in order."""
    if mask is None:
        return t.reshape(-1)
    return t[np.broadcast_to(real_positions(t.shape, mask), t.shape)]


MAX_TOLERANCE = 1e6


def check_tolerance(name: str, value) -> float:
    """A tolerance is a finite number from 0 to MAX_TOLERANCE: a negative or NaN one fails identical
    tensors, and a huge one passes anything."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TOLERANCE:
        raise ValueError(f"{name} must be a number from 0 to {MAX_TOLERANCE:g}, got {value!r}")
    return float(value)


def _close(ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float) -> bool:
    """Every value within atol + rtol * |reference|, or equal to it (an infinity equals itself); NaN never."""
    with np.errstate(all="ignore"):
        return bool(np.all((cand == ref) | (np.abs(cand - ref) <= atol + rtol * np.abs(ref))))


def _differences(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float, float]:
    with np.errstate(all="ignore"):  # a broken port's infinities and NaNs are reported, not warned about
        return _differences_of(ref, cand)


def _differences_of(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float, float]:
    diff = np.where(cand == ref, 0.0, np.abs(cand - ref))  # equal infinities differ by nothing
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if diff.size else 0.0
    denominator = float(np.linalg.norm(ref) * np.linalg.norm(cand))
    cosine = float(np.dot(ref, cand) / denominator) if denominator else float(np.array_equal(ref, cand))
    return max_abs, max_rel, cosine


def compare(reference: dict, candidate: dict, atol: float = 1e-5, rtol: float = 1e-4, subset: bool = False) -> Report:
    """Compare dumps (name -> numpy array, the reference in computation order). Inputs the candidate holds
    must equal the reference's exactly: they define the run. `subset`: compare only the steps the candidate
    holds (a port that dumps a few), instead of counting the others as missing."""
    atol, rtol = check_tolerance("atol", atol), check_tolerance("rtol", rtol)
    mask = reference.get("inputs.attention_mask")
    names = [n for n in reference if not n.startswith("inputs.")]
    if not names:
        raise ValueError(
            "the reference holds no step tensors to compare against (a minibert dump holds "
            "embeddings.*, layers.*, pooler.*)"
        )
    compared = [n for n in names if n in candidate] if subset else names
    if not compared:
        raise ValueError("the candidate holds none of the reference's step tensors: nothing to compare")
    num_layers = len({n.split(".")[1] for n in names if n.startswith("layers.")})
    rows, report = [], Report([], atol, rtol)
    for name in [n for n in reference if n.startswith("inputs.") and n in candidate]:
        ref, cand = reference[name], candidate[name]
        if cand.shape != ref.shape:
            rows.append(
                Row(name, "FAIL", note=f"shape {cand.shape}, not {ref.shape}: the candidate ran on other inputs")
            )
            continue
        differ = np.abs(cand.astype(np.float64) - ref.astype(np.float64)).max(initial=0.0)
        note = "" if differ == 0 else "the candidate ran on other inputs"
        rows.append(Row(name, "ok" if differ == 0 else "FAIL", float(differ), float(differ > 0), float("nan"), note))
    values = {}
    for name in compared:
        if name not in candidate:
            rows.append(Row(name, "missing", note="missing from the candidate"))
            continue
        ref, cand = reference[name], candidate[name]
        if not (np.issubdtype(cand.dtype, np.floating) or np.issubdtype(cand.dtype, np.integer)):
            rows.append(Row(name, "FAIL", note=f"dtype {cand.dtype}: a step holds real numbers"))
            continue
        note = f"dtype {cand.dtype} against {ref.dtype}" if cand.dtype != ref.dtype else ""
        if cand.shape != ref.shape:
            transposed = ref.ndim >= 2 and cand.shape == ref.shape[:-2] + ref.shape[:-3:-1]
            what = "the transpose of the reference's" if transposed else "not the reference's"
            rows.append(Row(name, "shape", note=f"shape {cand.shape} is {what} {ref.shape}"))
            continue
        r, c = real_values(ref.astype(np.float64), mask), real_values(cand.astype(np.float64), mask)
        values[name] = (r, c)
        max_abs, max_rel, cosine = _differences(r, c)
        rows.append(Row(name, "ok" if _close(r, c, atol, rtol) else "FAIL", max_abs, max_rel, cosine, note))
    report.rows = rows
    report.only_in_candidate = [n for n in candidate if n not in reference and not n.startswith("inputs.")]
    report.not_compared = [n for n in names if n not in compared]

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
        if _close(r, cand, atol, rtol) or (max_abs < own / 100):
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
        inputs = sum(r.name.startswith("inputs.") for r in report.rows)
        same = f", and the candidate's {inputs} inputs are the reference's" if inputs else ""
        steps = len(report.rows) - inputs
        lines.append(f"all {steps} tensors agree (atol {report.atol:g}, rtol {report.rtol:g}){same}")
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
    if report.not_compared:
        lines.append(f"not in the candidate, and not compared (--subset): {len(report.not_compared)} tensors")
    if report.only_in_candidate:
        lines.append(f"only in the candidate (not compared): {', '.join(report.only_in_candidate[:5])}")
    return "\n".join(printable(line) for line in lines)  # tensor names come from the files
