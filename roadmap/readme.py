"""Generated blocks of a README: the text between a pair of marker lines is replaced, the rest is never touched.

Each command that writes into README has markers of its own (`list --readme`: steps-<roadmap>; `table --readme`:
results-<roadmap>; `study --readme`: study-<roadmap>), so one never overwrites another's block.
"""
from __future__ import annotations

from pathlib import Path

from .config import ConfigError
from .results import atomic_write_text, check_writable


def steps_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `list --readme`'s steps table."""
    return f"<!-- steps-{roadmap}:begin -->", f"<!-- steps-{roadmap}:end -->"


def results_markers(roadmap: str) -> tuple[str, str]:
    """The README markers of `table --readme`'s results: one pair per roadmap, so that one never overwrites another's."""
    return f"<!-- results-{roadmap}:begin -->", f"<!-- results-{roadmap}:end -->"


def marked_text(readme: Path, begin_marker: str, end_marker: str) -> tuple[str, int, int]:
    """README's text and where its markers are; a README that cannot take a generated block is a ConfigError."""
    readme = Path(readme)
    try:
        text = readme.read_bytes().decode()
    except OSError as err:
        raise ConfigError(f"{readme} cannot be read ({err.strerror or type(err).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{readme} is not UTF-8 text") from None
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < 0 or end < begin:
        raise ConfigError(f"{readme} needs the markers '{begin_marker}' and then '{end_marker}' on their own lines "
                          "where the generated text goes; add them and rerun")
    check_writable(readme.parent, "--readme")   # it is replaced by a rename in its folder
    return text, begin, end


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
