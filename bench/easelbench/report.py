"""The results table: one row per measured figure, with its baseline, ratio and target verdict."""

from dataclasses import dataclass


@dataclass
class Row:
    scenario: str
    metric: str
    easel: str
    baseline: str
    ratio: str = "–"
    target: str = "–"
    # True/False against the target; None where the row has no target.
    passed: object = None

    @property
    def verdict(self):
        return {True: "PASS", False: "FAIL", None: "–"}[self.passed]


def rate(per_sec):
    return f"{per_sec:,.0f}/s"


def ms(value):
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def ratio(value):
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def megabytes(kb):
    return f"{kb / 1024:.1f} MB"


def markdown(rows, header_lines, notes):
    columns = ["Scenario", "Metric", "Easel", "Baseline (same run)", "Ratio", "Target", "Verdict"]
    out = list(header_lines)
    out.append("")
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "|".join(" --- " for _ in columns) + "|")
    for r in rows:
        cells = [r.scenario, r.metric, r.easel, r.baseline, r.ratio, r.target, r.verdict]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    return "\n".join(out) + "\n"


def summary(rows):
    judged = [r for r in rows if r.passed is not None]
    passed = sum(1 for r in judged if r.passed)
    return f"targets: {passed} of {len(judged)} met"
