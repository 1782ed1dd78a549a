"""Generated blocks of a README or a page of docs/: the text between a pair of marker lines is replaced, the rest
is never touched.

Each command that writes into such a file (`--readme PATH`) has markers of its own (`list`: steps-<roadmap>; `table`:
results-<roadmap>; `study`: study-<roadmap>, and study-<roadmap>-answer for the answer alone; `sweep-report`: sweep-<name>, and
sweep-<name>-answer), so one never overwrites
another's block; a block lives wherever its markers are.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError
from .markdown import bullets
from .results import atomic_write_text, check_writable


def steps_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `list --readme`'s steps table."""
    return f"<!-- steps-{roadmap}:begin -->", f"<!-- steps-{roadmap}:end -->"


def results_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `table --readme`'s results: one pair per roadmap, so that one never overwrites another's."""
    return f"<!-- results-{roadmap}:begin -->", f"<!-- results-{roadmap}:end -->"


def study_markers(roadmap: str, part: str = "") -> tuple[str, str]:
    """The markers of `study --readme`'s block: the whole study, or one `part` of it ('answer')."""
    name = f"study-{roadmap}" + (f"-{part}" if part else "")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def sweep_markers(name: str, part: str = "") -> tuple[str, str]:
    """The markers of `sweep-report --readme`'s block: the whole report, or one `part` of it ('answer')."""
    block = f"sweep-{name}" + (f"-{part}" if part else "")
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def read_text(readme: Path) -> str:
    try:
        return Path(readme).read_bytes().decode()
    except OSError as err:
        raise ConfigError(f"{readme} cannot be read ({err.strerror or type(err).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{readme} is not UTF-8 text") from None


def marker_span(text: str, begin_marker: str, end_marker: str) -> tuple[int, int] | None:
    """Where the markers are in `text`; None unless both are there, in that order."""
    begin, end = text.find(begin_marker), text.find(end_marker)
    return None if begin < 0 or end < begin else (begin, end)


def marked_text(readme: Path, begin_marker: str, end_marker: str) -> tuple[str, int, int]:
    """README's text and where its markers are; a README that cannot take a generated block is a ConfigError."""
    readme = Path(readme)
    text = read_text(readme)
    span = marker_span(text, begin_marker, end_marker)
    if span is None:
        raise ConfigError(f"{readme} needs the markers '{begin_marker}' and then '{end_marker}' on their own lines "
                          "where the generated text goes; add them and rerun")
    check_writable(readme.parent, "--readme")   # it is replaced by a rename in its folder
    return text, *span


def held_markers(readme: Path, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The marker pairs among `pairs` that README holds; a ConfigError naming them all when it holds none."""
    text = read_text(readme)
    held = [pair for pair in pairs if marker_span(text, *pair)]
    if not held:
        wanted = " or ".join(f"'{begin}' and then '{end}'" for begin, end in pairs)
        raise ConfigError(f"{readme} needs the markers {wanted} on their own lines where the generated text goes; "
                          "add them and rerun")
    check_writable(Path(readme).parent, "--readme")
    return held


def replace_between_markers(readme: Path, begin_marker: str, end_marker: str, block: str) -> bool:
    """Put `block` between two marker lines of a README; True if the file changed."""
    text, begin, end = marked_text(readme, begin_marker, end_marker)
    new_text = text[:begin + len(begin_marker)] + "\n" + block + text[end:]
    if new_text == text:
        return False
    atomic_write_text(readme, new_text)
    return True


def update_readme(readme: Path, roadmap: str, table_md: str, figure_rel_path: str, context_line: str) -> bool:
    """Replace what lies between the roadmap's results markers of README; True if the file changed.

    `figure_rel_path` '' leaves the figure out."""
    block = context_line + "\n\n" + table_md.rstrip("\n") + "\n"
    if figure_rel_path:
        block += f"\n![roadmap results]({figure_rel_path})\n"
    return replace_between_markers(readme, *results_markers(roadmap), block)


def write_report_blocks(held: dict[Path, list[tuple[str, str]]], markers: Callable[..., tuple[str, str]], alt: str,
                        title: str, body: str, answer: list[str], figure: Path | None,
                        answer_table: str = "") -> list[Path]:
    """Into each file of `held` (held_markers'), the blocks it has markers for: the whole report (`markers()`) and
    its answer alone (`markers("answer")`: the figure, a short table if given, and the lines that say what was found,
    for a landing page), the figure linked from that file's folder. The files changed."""
    changed = []
    for readme, pairs in held.items():
        link = "" if figure is None else f"![{alt}]({Path(os.path.relpath(figure, Path(readme).parent)).as_posix()})\n"
        blocks = {markers(): title + "\n\n" + body + (f"\n{link}" if link else ""),
                  markers("answer"): (f"{link}\n" if link else "") + (f"{answer_table}\n" if answer_table else "")
                  + bullets(answer)}
        if any([replace_between_markers(readme, *pair, blocks[pair]) for pair in pairs]):
            changed.append(Path(readme))
    return changed
