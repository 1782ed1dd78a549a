"""Per-class report of a classifier: the confusion matrix and what it says of each class.

Top-1 alone hides a class the network never gets right when that class is rare; a user with an imbalanced
folder of their own needs each class's accuracy (the share of its images classified right: its recall),
precision (the share of the images classified as it that are it) and where its mistakes go (the confusion
matrix: a row per true class, a column per predicted class). `evaluate` prints it (`--csv`, `--plot` write it)
and every complete run's record keeps its last evaluation's matrix under `confusion`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from .results import printable, text_bytes, write_output

RECORD_MAX_CLASSES = 100   # a record keeps the matrix up to this many classes (100 x 100: 100 lines of JSON)
PRINTED_MAX_CLASSES = 20   # `evaluate` prints the matrix up to this many classes (more: --csv, --plot)
ANNOTATED_MAX_CLASSES = 30  # the heat map writes each cell's count up to this many classes


def confusion_counts(targets: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts of one batch: row = true class, column = predicted class."""
    flat = torch.bincount(targets * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def record_confusion(confusion: torch.Tensor | None) -> list[list[int]] | None:
    """The matrix as a record keeps it (a list of rows), or None past RECORD_MAX_CLASSES."""
    if confusion is None or len(confusion) > RECORD_MAX_CLASSES:
        return None
    return confusion.cpu().tolist()


def _percent(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


def per_class(confusion: list[list[int]], classes: list[str]) -> list[dict]:
    """One dict per class: images, predicted (images classified as it), correct, accuracy (= recall), precision
    and F1, in %; None where a class has no images (or nothing was classified as it)."""
    rows = []
    for i, name in enumerate(classes):
        images, predicted, correct = sum(confusion[i]), sum(row[i] for row in confusion), confusion[i][i]
        recall, precision = _percent(correct, images), _percent(correct, predicted)
        f1 = None if recall is None or precision is None else (
            2 * recall * precision / (recall + precision) if correct else 0.0)
        rows.append({"class": name, "images": images, "predicted": predicted, "correct": correct,
                     "accuracy": recall, "precision": precision, "recall": recall, "f1": f1})
    return rows


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def per_class_text(confusion: list[list[int]], classes: list[str]) -> str:
    """The per-class table, then the confusion matrix (up to PRINTED_MAX_CLASSES), as markdown."""
    from .markdown import markdown_table   # pandas and scipy: not for the training processes that import this module

    rows = [[i, r["class"], r["images"], r["predicted"], _shown(r["accuracy"]), _shown(r["precision"]),
             _shown(r["f1"])] for i, r in enumerate(per_class(confusion, classes))]
    text = markdown_table(["#", "class", "images", "predicted as it", "accuracy (recall) %", "precision %", "F1 %"],
                          rows, align="rlrrrrr")
    if len(classes) > PRINTED_MAX_CLASSES:
        return text + f"\n(the confusion matrix of {len(classes)} classes: --csv PATH or --plot PATH)\n"
    matrix = [[f"{i} {name}", *confusion[i]] for i, name in enumerate(classes)]
    header = ["true \\ predicted", *map(str, range(len(classes)))]
    return text + "\n" + markdown_table(header, matrix, align="l" + "r" * len(classes))


def per_class_csv(confusion: list[list[int]], classes: list[str]) -> str:
    """A row per true class: its numbers, then its row of the confusion matrix (a column per predicted class)."""
    out = io.StringIO()
    fields = ["class", "images", "predicted", "correct", "accuracy", "precision", "recall", "f1"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields + [f"as {name}" for name in classes])
    for row, counts in zip(per_class(confusion, classes), confusion):
        writer.writerow([row["class"]] + ["" if row[f] is None else row[f] for f in fields[1:]] + counts)
    return out.getvalue()


def write_csv(path: Path, confusion: list[list[int]], classes: list[str]) -> Path:
    return write_output(path, text_bytes(per_class_csv(confusion, classes)), "--csv")


def plot_confusion(path: Path, confusion: list[list[int]], classes: list[str], title: str) -> Path:
    """A heat map of the confusion matrix, each row as shares of its class's images (so a rare class shows as
    clearly as a common one), with the counts written in the cells (up to ANNOTATED_MAX_CLASSES)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), layout="constrained")
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class's images")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class", title=printable(title))
    ax.set_xticklabels(map(printable, classes), rotation=90, fontsize=8)
    ax.set_yticklabels(map(printable, classes), fontsize=8)
    if n <= ANNOTATED_MAX_CLASSES:
        for (i, j), count in zip(((i, j) for i in range(n) for j in range(n)), counts.flatten().tolist()):
            ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return write_output(path, buffer.getvalue(), "--plot")
