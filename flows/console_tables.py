"""Tables for the terminal and for logs: rich on a terminal, plain aligned text elsewhere.

When stdout is not a terminal rich fits a table into 80 columns and folds or empties the
cells that do not fit; a plain table keeps every cell whole, whatever its width.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

COLUMN_GAP = "  "


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> str:
    """Left-aligned columns as wide as their widest cell, a dashed rule under the headers."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return COLUMN_GAP.join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    lines = [title] if title else []
    lines += [line(headers), line(["-" * width for width in widths]), *(line(row) for row in rows)]
    return "\n".join(lines)


def print_table(console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    if console.is_terminal:
        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        print(plain_table(headers, rows, title), flush=True)
