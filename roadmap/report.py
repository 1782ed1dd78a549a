"""Tables (markdown + csv) and figures of roadmap results."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    def cell(v):
        return "" if v is None else str(v)
    align = ["---:" if rows and isinstance(rows[0][i], (int, float)) and not isinstance(rows[0][i], bool) else "---"
             for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
