"""Training learns: a few epochs on a learnable synthetic set lower the loss and beat chance clearly.

The synthetic images' mean colour depends on their class (roadmap/data/sources.py), so a tiny network learns them
in a few dozen updates. A loop that never stepped the optimizer would keep its first loss and guess at chance."""
from conftest import main, tiny
from roadmap.results import RunKey, read_record

CLASSES = 4


def test_three_epochs_lower_the_loss_and_beat_chance(tmp_path, capsys):
    # The classic recipe (SGD, no augmentation) on 256 images in batches of 32: 8 updates an epoch, 24 in all.
    code, err = main(capsys, "run", "--step", "resnet50", "--results", tmp_path / "results",
                     "--checkpoints", tmp_path / "ckpt",
                     *tiny("scale.classic_epochs=3", "data.synthetic_size=256", f"data.synthetic_classes={CLASSES}",
                           "scale.batch_size=32", "scale.micro_batch=32", "recipe.lr=0.8"))
    assert code == 0, err
    record = read_record(RunKey("resnet50", "demo", "synthetic", "resnet50", 0).record_path(tmp_path / "results"))
    losses = [epoch["train_loss"] for epoch in record["epochs"]]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    chance = 100 / CLASSES
    assert record["top1"] >= chance + 35, (record["top1"], losses)   # 64 held-out images; chance is 25%
