"""Use a run's kept weights: classify image files (`predict`) or measure top-1/top-5 and the per-class report
(perclass.py) on a dataset (`evaluate`).

Both see images as the run's evaluation saw its own: its image size, resizing, crop and normalisation (data/serving.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .config import DataConfig, ScaleConfig
from .data import IMAGE_EXTENSIONS, DataError, build_data, read_eval_images
from .perclass import per_class
from .train import eval_stats, eval_totals

CHUNK = 64   # images decoded and classified at a time


def image_files(inputs: list[str]) -> list[str]:
    """Files as given, folders expanded to the image files under them (sorted; dot files left out)."""
    paths = []
    for item in inputs:
        folder = Path(item)
        if folder.is_dir():
            paths += sorted(str(p) for p in folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        else:
            paths.append(item)
    return paths


@torch.no_grad()
def predict(model: torch.nn.Module, record: dict, inputs: list[str], device: torch.device, top: int = 5) -> list[dict]:
    """[{'image': path, 'top5': [{'class': name, 'prob': p}, ...]}] per readable image; a warning for each other."""
    scale, classes = record["config"]["scale"], record["classes"]
    paths, out = image_files(inputs), []
    if not paths:
        raise DataError(f"no image files in {', '.join(inputs)}")
    model = model.to(device).eval()
    from_files = record["data"].startswith("imagefolder:")
    for start in range(0, len(paths), CHUNK):
        images, read, failures = read_eval_images(paths[start:start + CHUNK], scale["image_size"], scale["crop"],
                                                  from_files)
        for failure in failures:
            print(f"warning: cannot read {failure}; skipped", file=sys.stderr)
        if not read:
            continue
        probs = model(images.to(device)).float().softmax(dim=1).cpu()
        values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
        out += [{"image": path, "top5": [{"class": classes[i], "prob": p} for p, i in zip(v.tolist(), k.tolist())]}
                for path, v, k in zip(read, values, indices)]
    if not out:
        raise DataError(f"none of the {len(paths)} files could be read as an image")
    return out


def prediction_line(prediction: dict) -> str:
    """'shoe.png: Sneaker 91.2%, Sandal 6.1%, ...'"""
    ranked = ", ".join(f"{c['class']} {100 * c['prob']:.1f}%" for c in prediction["top5"])
    return f"{prediction['image']}: {ranked}"


def label_map(record: dict, spec: str, classes: list[str]) -> torch.Tensor:
    """The weights' label for each label of the data, matched by class name: an image folder sorts its classes,
    and a folder name cannot hold '/' ('T-shirt_top' stands for Fashion-MNIST's 'T-shirt/top')."""
    def key(name: str) -> str:
        return name.replace("/", "_")

    trained = {key(name): i for i, name in enumerate(record["classes"])}
    theirs = [key(name) for name in classes]
    if sorted(theirs) != sorted(trained):
        def listed(names: list[str]) -> str:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            return shown or "none"
        raise DataError(f"{spec} has other classes than the run was trained on ({len(theirs)} vs {len(trained)}; "
                        f"only in the weights: {listed(sorted(set(trained) - set(theirs)))}; only in {spec}: "
                        f"{listed(sorted(set(theirs) - set(trained)))}); evaluate on data with the same classes")
    return torch.tensor([trained[name] for name in theirs])


def evaluate(model: torch.nn.Module, record: dict, spec: str, root: str | None, device: torch.device,
             batch_size: int = 256, eval_subset: int | None = None) -> dict:
    """Top-1/top-5 (%), loss and confusion matrix (rows and columns in the weights' class order) of the kept weights
    on `spec`'s evaluation split, seen as the run saw its own."""
    scale, saved = record["config"]["scale"], record["config"]["data"]
    data_cfg = DataConfig(spec=spec, root=root, workers=saved["workers"], synthetic_size=saved["synthetic_size"],
                          synthetic_classes=saved["synthetic_classes"])
    scale_cfg = ScaleConfig(image_size=scale["image_size"], crop=scale["crop"], eval_subset=eval_subset)
    data = build_data(data_cfg, scale_cfg, batch_size=batch_size, device=device, eval_only=True)
    to_weights = label_map(record, spec, data.classes).to(device)
    batches = ((images, to_weights[targets]) for images, targets in data.eval_batches())
    totals, confusion = eval_totals(model.to(device), batches, device, len(record["classes"]))
    stats = eval_stats(totals)
    return {"step": record["step"], "seed": record["seed"], "data": spec, "images": int(totals[3]),   # the readable
            "top1": stats["eval_top1"], "top5": stats["eval_top5"], "loss": stats["eval_loss"],
            "classes": record["classes"], "confusion": confusion.cpu().tolist(),
            "per_class": per_class(confusion.cpu().tolist(), record["classes"])}
