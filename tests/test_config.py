"""Strict step loading: every user mistake is one clear ConfigError (the CLI turns it into exit 2)."""
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from roadmap.config import (ConfigError, build_run_config, load_roadmap, load_step, parse_overrides)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def steps_dir(tmp_path):
    """A copy of the real steps/ that a test may break."""
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    return tmp_path / "steps"


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_real_roadmaps_load_in_order():
    steps = load_roadmap("resnet50")
    assert [s.id for s in steps][:3] == ["resnet50", "modern_recipe", "stage_ratio"]
    assert [s.id for s in steps if s.equals] == ["resnet50", "separate_downsampling"]
    assert [s.id for s in steps if not s.adopted] == ["kernel5", "kernel9", "kernel11", "official_init"]
    assert {s.base for s in steps if s.id.startswith("kernel")} == {"move_up_dwconv"}


def test_a_step_inherits_everything_from_its_bases():
    last = load_step("resnet50", "separate_downsampling")
    assert last.model.depths == (3, 3, 9, 3) and last.model.widths == (96, 192, 384, 768)
    assert last.model.kernel_size == 7 and last.model.norm == "ln" and last.recipe.name == "modern"
    assert load_step("resnet50", "gelu").model.kernel_size == 7  # from kernel7, not a side branch


def test_a_user_step_is_one_file(steps_dir):
    write(steps_dir / "resnet50" / "18_kernel3_again.yaml",
          "base: separate_downsampling\ntitle: back to 3x3\nadopted: false\nmodel: {kernel_size: 3}\n")
    step = load_roadmap("resnet50", steps_dir)[-1]
    assert (step.id, step.order, step.adopted, step.model.kernel_size) == ("kernel3_again", 18, False, 3)


@pytest.mark.parametrize("text,message", [
    ("base: gelu\ntitle: t\nmodle: {}\n", "unknown key 'modle' (did you mean 'model'?)"),
    ("base: gelu\ntitle: t\nmodel: {kernal_size: 5}\n", "99_x.yaml: unknown key 'model.kernal_size' (did you mean 'kernel_size'?)"),
    ("base: gelu\ntitle: t\nmodel: {kernel_size: five}\n", "model.kernel_size must be int, not 'five'"),
    ("base: gelu\ntitle: t\nmodel: {depths: 3}\n", "model.depths must be a list"),
    ("base: gelu\ntitle: t\nadopted: maybe\n", "adopted must be bool"),
    ("base: nothere\ntitle: t\n", "base 'nothere' is not a step of this roadmap"),
    ("base: gelu\ntitle: [unclosed\n", "malformed YAML at line"),
    ("base: gelu\n", "needs a 'title:'"),
    ("- a list\n", "must be a mapping"),
])
def test_step_file_errors(steps_dir, text, message):
    write(steps_dir / "resnet50" / "99_x.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_roadmap("resnet50", steps_dir)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_base_cycle(steps_dir):
    write(steps_dir / "resnet50" / "97_a.yaml", "base: b\ntitle: a\n")
    write(steps_dir / "resnet50" / "98_b.yaml", "base: a\ntitle: b\n")
    with pytest.raises(ConfigError, match="base cycle a -> b -> a"):
        load_roadmap("resnet50", steps_dir)


def test_unknown_step_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown step 'kernal7'.*did you mean 'kernel7'"):
        load_step("resnet50", "kernal7")


@pytest.mark.parametrize("pairs,message", [
    (["model.kernel_size"], "--set needs section.key=value"),
    (["modle.kernel_size=5"], "did you mean 'model'"),
])
def test_override_syntax_errors(pairs, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(pairs)


def test_overrides_are_typed():
    cfg = build_run_config("resnet50", "kernel7", "demo", None, 0,
                           parse_overrides(["model.kernel_size=9", "scale.epochs=2", "recipe.lr=1e-3"]))
    assert cfg.model.kernel_size == 9 and cfg.scale.epochs == 2 and cfg.recipe.lr == 1e-3
    assert cfg.model.widths == (24, 48, 96, 192)  # demo scale: 1/4 width, applied to every step
    # A wrong key, type or value: tests/test_bad_input.py, the catalogue of user mistakes.


def test_cli_list_error_is_one_line_exit_2(steps_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "runner.py"), "list", "--roadmap", "resnet51"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_cli_list_json():
    import json
    proc = subprocess.run([sys.executable, str(ROOT / "runner.py"), "list", "--json"], capture_output=True, text=True,
                          check=True)
    rows = json.loads(proc.stdout)
    assert len(rows) == 18
    assert {"id", "title", "adopted", "base", "params", "gflops", "paper_gflops", "paper_top1"} <= set(rows[0])
    params = {row["id"]: row["params_exact"] for row in rows}
    assert params["resnet50"] == 25_557_032 and params["separate_downsampling"] == 28_589_128


def test_recipe_choices_name_the_presets_and_optimizers():
    from roadmap.config import RecipeConfig
    from roadmap.recipe import OPTIMIZERS, PRESETS
    hints = typing.get_type_hints(RecipeConfig)
    assert set(typing.get_args(hints["name"])) == set(PRESETS)
    assert set(typing.get_args(typing.get_args(hints["optimizer"])[0])) == set(OPTIMIZERS)


@pytest.mark.parametrize("pair, message", [
    ("scale.crop=center", "scale.crop must be one of rrc, pad, not 'center'"),
    ("train.amp=fp8", "train.amp must be one of auto, bf16, fp16, off, not 'fp8'"),
    ("recipe.schedule=cosin", "recipe.schedule must be one of step, cosine, not 'cosin' (did you mean 'cosine'?)"),
    ("model.act=silu", "model.act must be one of relu, gelu, not 'silu'"),
    ("scale.regularization=2", "scale.regularization must be >= 0 and <= 1, not 2.0"),
    ("scale.width_mult=0", "scale.width_mult must be > 0, not 0.0"),
])
def test_one_validator_checks_choices_and_ranges_where_a_value_is_set(pair, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_run_config("resnet50", "gelu", "demo", "synthetic", 0, parse_overrides([pair]))
