"""The per-class report: `evaluate` prints and writes each class's accuracy, precision and the confusion matrix, and
every complete run's record keeps its matrix."""
import csv
import json

import pytest

from roadmap import cli
from roadmap.perclass import per_class, per_class_csv, per_class_text
from roadmap.results import load_records

RUN = ["--no-progress", "--set", "scale.epochs=1", "--set", "scale.batch_size=8", "--set", "scale.micro_batch=8",
       "--set", "data.workers=0"]
STEP = "gelu"


@pytest.fixture(scope="module")
def run(tmp_path_factory, photos):
    """A tiny run on an imbalanced folder (val: 6 cats, 2 dogs, 4 foxes): (root, folder, record)."""
    root = tmp_path_factory.mktemp("perclass")
    folder = photos(root / "photos", val=(6, 2, 4))
    assert cli.main(["run", "--step", STEP, "--data", f"imagefolder:{folder}", "--results", str(root / "results"),
                     "--checkpoints", str(root / "ckpt"), *RUN]) == 0
    (record,) = load_records(root / "results")
    return root, folder, record


def evaluate(root, folder, *args):
    return cli.main(["evaluate", "--step", STEP, "--results", str(root / "results"), "--data",
                     f"imagefolder:{folder}", *args])


def test_the_record_keeps_a_confusion_matrix_whose_rows_are_the_class_counts(run):
    _, _, record = run
    matrix = record["confusion"]
    assert [sum(row) for row in matrix] == [6, 2, 4]
    assert 100 * sum(matrix[i][i] for i in range(3)) / 12 == pytest.approx(record["top1"])


def test_evaluate_prints_the_per_class_report_and_writes_it_as_csv_and_png(run, tmp_path, capsys):
    root, folder, _ = run
    capsys.readouterr()
    assert evaluate(root, folder, "--csv", str(tmp_path / "report.csv"), "--plot", str(tmp_path / "cm.png")) == 0
    out = capsys.readouterr()
    assert "accuracy (recall) %" in out.out and "true \\ predicted" in out.out
    assert "wrote" in out.err and (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["class"] for r in rows] == ["cat", "dog", "fox"] and [int(r["images"]) for r in rows] == [6, 2, 4]
    assert [sum(int(r[f"as {c}"]) for c in ("cat", "dog", "fox")) for r in rows] == [6, 2, 4]
    assert evaluate(root, folder, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert [sum(row) for row in result["confusion"]] == [6, 2, 4]
    assert [r["images"] for r in result["per_class"]] == [6, 2, 4]


def test_per_class_numbers():
    confusion = [[5, 1, 0],    # 6 cats: 5 right, one taken for a dog
                 [2, 0, 0],    # 2 dogs: none right
                 [0, 0, 0]]    # no fox in the set
    rows = per_class(confusion, ["cat", "dog", "fox"])
    assert rows[0] == {"class": "cat", "images": 6, "predicted": 7, "correct": 5, "accuracy": pytest.approx(500 / 6),
                       "precision": pytest.approx(500 / 7), "recall": pytest.approx(500 / 6),
                       "f1": pytest.approx(2 * 5 / (6 + 7) * 100)}
    assert rows[1]["accuracy"] == 0 and rows[1]["precision"] == 0 and rows[1]["f1"] == 0
    assert rows[2]["accuracy"] is None and rows[2]["precision"] is None and rows[2]["f1"] is None
    text = per_class_text(confusion, ["cat", "dog", "fox"])
    assert "| 2 | fox | 0 | 0 | - | - | - |" in text and "| 0 cat | 5 | 1 | 0 |" in text
    assert per_class_csv(confusion, ["cat", "dog", "fox"]).splitlines()[3] == "fox,0,0,0,,,,,0,0,0"


def test_many_classes_print_no_matrix_but_write_it():
    classes = [f"c{i}" for i in range(30)]
    confusion = [[int(i == j) for j in range(30)] for i in range(30)]
    assert "true \\ predicted" not in per_class_text(confusion, classes)
    assert len(per_class_csv(confusion, classes).splitlines()) == 31
