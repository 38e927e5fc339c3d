"""Markdown tables for the benchmark scripts (run as ``python benchmarks/NAME.py``)."""


def table(header: list[str], rows: list[list]) -> None:
    """Print ``rows`` under ``header`` as a right-aligned Markdown table, then a blank line."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, width)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    print()


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 1e4 else f"{c:.3e}"
    return str(c)
