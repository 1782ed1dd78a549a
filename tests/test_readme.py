"""The commands of README.md and docs/ run as written, their links resolve, and their generated blocks are what
the commands that own them write; a step of one's own works end to end (list, run, table)."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import runner, tiny

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]   # the landing page and one page a topic
TEXTS = {page: page.read_text() for page in PAGES}


def readme_commands(prefix: str) -> list[list[str]]:
    """`python runner.py ...` lines of the shell blocks of README.md and docs/, comments stripped, each once."""
    blocks = [block for text in TEXTS.values() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[2:] for line in dict.fromkeys(lines) if line.startswith(prefix)]


def home_of(marker: str) -> Path:
    """The one page of README.md and docs/ that holds this generated block."""
    (page,) = [page for page, text in TEXTS.items() if f"<!-- {marker}:begin -->" in text]
    return page


def copy_pages(tmp_path: Path, pages: list[Path]) -> dict[Path, Path]:
    """{page: its copy}, at the same place under tmp_path, so a figure is linked from the same relative path."""
    copies = {page: tmp_path / page.relative_to(ROOT) for page in pages}
    for page, copy in copies.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, copy)
    return copies


RUN_COMMANDS = [c for c in readme_commands("python runner.py run") if not any(
    needs in " ".join(c) for needs in ("imagefolder:", "cifar10", "init_from"))]  # data or files not here


def test_the_readme_has_run_commands_to_check():
    assert len(RUN_COMMANDS) >= 2 and any("--all" in c for c in RUN_COMMANDS)


@pytest.mark.parametrize("args", RUN_COMMANDS, ids=[" ".join(c) for c in RUN_COMMANDS])
def test_readme_run_commands_plan_cleanly(args, tmp_path):
    args = [tmp_path / "scratch" if a == "scratch" else a for a in args]
    proc = runner(*map(str, args), *([] if "--dry-run" in args else ["--dry-run"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step:" in proc.stdout and not (tmp_path / "scratch").exists()


def test_readme_list_commands_run():
    for args in readme_commands("python runner.py list"):
        proc = runner(*args)
        assert proc.returncode == 0 and proc.stdout, proc.stderr[-2000:]


def test_a_step_of_ones_own_end_to_end(tmp_path):
    """The README's 'Adding a step' example: a folder of one's own, list, a run, a table."""
    steps = tmp_path / "my_steps"
    shutil.copytree(ROOT / "steps", steps)
    (steps / "resnet50" / "18_kernel9_convnext.yaml").write_text(
        "base: separate_downsampling\ntitle: ConvNeXt-T with 9x9 kernels\nadopted: false\nmodel: {kernel_size: 9}\n")
    env = {"ROADMAP_STEPS_DIR": str(steps)}
    listed = runner("list", env=env)
    assert listed.returncode == 0 and "kernel9_convnext" in listed.stdout
    results = tmp_path / "my_results"
    ran = runner("run", "--step", "separate_downsampling", "kernel9_convnext", "--results", str(results),
                 "--checkpoints", str(tmp_path / "ckpt"), *tiny(), env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    table = runner("table", "--results", str(results), "--out", str(results / "report"), env=env)
    assert table.returncode == 0, table.stderr[-2000:]
    md = (results / "report" / "resnet50-demo-synthetic.md").read_text()
    assert "| kernel9_convnext | ConvNeXt-T with 9x9 kernels (branch) |" in md


OWN_IMAGES = (ROOT / "docs" / "own-images.md").read_text()
QUICK = ["--set", "scale.epochs=1", "--set", "scale.batch_size=8", "--set", "scale.micro_batch=8", "--no-progress"]


def test_the_own_images_walkthrough_runs_as_written(tmp_path, photos):
    """Image folder -> a run of ConvNeXt-T -> per-class report -> predict -> Hugging Face, on a small folder in
    the commands' own working folder; the GPU fine-tuning command planned (--dry-run) from a timm ConvNeXt-T file."""
    transformers = pytest.importorskip("transformers", reason="the huggingface extra (make test installs it)")
    import timm
    from safetensors.torch import save_file

    photos(tmp_path / "my_images")
    save_file(timm.create_model("convnext_tiny").state_dict(), tmp_path / "convnext_tiny.safetensors")
    blocks = re.findall(r"```(bash|python)\n(.*?)```", OWN_IMAGES, flags=re.S)
    lines = [line.split("  #")[0].strip() for lang, block in blocks if lang == "bash" for line in block.splitlines()]
    commands = [shlex.split(line)[2:] for line in lines if line.startswith("python runner.py")]
    assert [c[0] for c in commands] == ["run", "evaluate", "predict", "export", "run"]
    for args in commands:
        quick = (QUICK if "cpu" in args else ["--dry-run", *QUICK]) if args[0] == "run" else []   # a few images
        proc = runner(*args, *quick, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert args[0] != "evaluate" or "accuracy (recall) %" in proc.stdout
    assert (tmp_path / "mine" / "per_class.csv").is_file() and (tmp_path / "mine" / "confusion.png").is_file()
    transformers.ConvNextConfig.from_pretrained(tmp_path / "my_convnext")
    (code,) = [block for lang, block in blocks if lang == "python"]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() in ("cat", "dog", "fox"), proc.stderr[-2000:]


def test_table_and_plot_write_only_where_told(tmp_path):
    """Commands that read do not touch the tree: table without --readme leaves README and docs/ alone."""
    results = ROOT / "results"
    if not any(results.glob("resnet50/cpu/*/*/seed*.json")):
        pytest.skip("no committed cpu-scale results")
    before = {page: page.read_bytes() for page in PAGES}
    for command in ("table", "plot"):
        proc = runner(command, "--scale", "cpu", "--data", "fashion-mnist", "--results", str(results),
                      "--out", str(tmp_path / command))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert {page: page.read_bytes() for page in PAGES} == before
    assert sorted(p.name for p in (tmp_path / "plot").iterdir()) == [
        "resnet50-cpu-fashion-mnist-cost.png", "resnet50-cpu-fashion-mnist-cost.svg",
        "resnet50-cpu-fashion-mnist.png", "resnet50-cpu-fashion-mnist.svg"]
    assert oct((tmp_path / "table" / "resnet50-cpu-fashion-mnist.md").stat().st_mode & 0o777) == oct(
        0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def uncommitted_records() -> list[str]:
    """Records the tables and the study read (.../<roadmap>/<scale>/<data>/<step>/seed<k>.json under results/, a
    sweep cell's too) that git does not hold as committed, a run training now, say; [] without git."""
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "results"], cwd=ROOT,
                          capture_output=True, text=True)
    paths = [line.split()[-1] for line in proc.stdout.splitlines()] if proc.returncode == 0 else []
    return [path for path in paths if re.search(r"/seed\d+\.json$", path)]


@pytest.mark.parametrize("roadmap", ["resnet50", "reverse"])
def test_committed_tables_and_readme_regenerate_from_the_committed_records(roadmap, tmp_path):
    """The headline results are what the records say: table and the block of the page it lives in (docs/results.md,
    docs/reverse.md), byte for byte."""
    stem = f"{roadmap}-cpu-fashion-mnist"
    if not (ROOT / "report" / f"{stem}.md").exists():
        pytest.skip(f"no committed {roadmap} cpu-scale table")
    if uncommitted_records():
        pytest.skip("results/ holds records not committed yet: the committed tables cannot be compared")
    page = home_of(f"results-{roadmap}")
    readme = copy_pages(tmp_path, [page])[page]
    out = tmp_path / "report"
    for command in (["plot"], ["table", "--readme", str(readme)]):   # the figure first: the README links it
        proc = runner(*command, "--roadmap", roadmap, "--scale", "cpu", "--data", "fashion-mnist",
                      "--results", str(ROOT / "results"), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
    for suffix in (".md", ".csv"):
        assert (out / f"{stem}{suffix}").read_text() == (ROOT / "report" / f"{stem}{suffix}").read_text(), \
            f"report/{stem}{suffix} is not what the records give: run make reference / make reverse"
    assert readme.read_text() == TEXTS[page], f"{page.name}'s results are not what the records give"


def test_the_level_cells_roadmap_table_regenerates_from_the_committed_records(tmp_path):
    """The whole roadmap in the gap sweep's level cell (make sweep-roadmap): its table and CSV under
    report/sweep-gap-roadmap/ are what the records say, byte for byte, written by the Makefile's command."""
    args = shlex.split(" ".join(make_variable("LEVEL_CELL_REPORT")).replace("$(LEVEL_CELL)",
                                                                            *make_variable("LEVEL_CELL")))
    committed = ROOT / args[args.index("--out") + 1]
    if not committed.is_dir():
        pytest.skip("no committed table of the level cell's roadmap")
    if uncommitted_records():
        pytest.skip("results/ holds records not committed yet: the committed table cannot be compared")
    args[args.index("--out") + 1] = str(tmp_path)
    args[args.index("--results") + 1] = str(ROOT / args[args.index("--results") + 1])
    proc = runner("table", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [path for path in sorted(tmp_path.iterdir()) if path.suffix in (".md", ".csv")]
    assert len(written) == 2
    for path in written:
        assert path.read_bytes() == (committed / path.name).read_bytes(), \
            f"{committed.relative_to(ROOT)}/{path.name} is not what the records give: run make sweep-roadmap"


def test_the_committed_study_regenerates_from_the_committed_records(tmp_path):
    """The study's blocks (its answer in README.md, the whole study in docs/) and its files under report/ are what
    the records say, byte for byte, written by the Makefile's command."""
    studies = sorted((ROOT / "report").glob("study-resnet50-*.md"))
    if not studies:
        pytest.skip("no committed study")
    if uncommitted_records():
        pytest.skip("results/ holds records not committed yet: the committed study cannot be compared")
    sets = make_variable("STUDY_SETS")
    pages = [home_of("study-resnet50-answer"), home_of("study-resnet50")]
    copies = copy_pages(tmp_path, pages)
    out = tmp_path / "report"
    targets = [arg for copy in copies.values() for arg in ("--readme", str(copy))]
    proc = runner("study", *sets, "--results", str(ROOT / "results"), "--out", str(out), *targets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in sorted(out.iterdir()):
        if path.suffix in (".md", ".csv", ".svg"):
            assert path.read_bytes() == (ROOT / "report" / path.name).read_bytes(), \
                f"report/{path.name} is not what the records give: run make study"
    for page, copy in copies.items():
        assert copy.read_text() == TEXTS[page], f"{page.name}'s study is not what the records give: run make study"


def test_every_committed_records_command_runs_as_written(capsys):
    """A record keeps the command that made it, to be typed again: runner.py's own parser takes it (its
    subcommand and flags exist; nothing is run), and it is never a --jobs worker's hidden command."""
    from roadmap.cli import build_parser

    commands = {}   # command -> a record that keeps it
    for path in sorted((ROOT / "results").rglob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "command" in record:
            commands.setdefault(record["command"], path.relative_to(ROOT))
    assert commands, "no committed record keeps a command"
    for command, path in commands.items():
        words = shlex.split(command)
        assert words[0] == "runner.py" and "--worker" not in words, f"{path}: {command}"
        try:
            build_parser().parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{path}: {command}: {capsys.readouterr().err.strip()}")


def make_variable(name: str) -> list[str]:
    """A variable of the Makefile, as make would see it with no override (a `NAME ?= words` or `NAME := words`
    line), its words unexpanded."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines()
                if re.match(rf"{name} [?:]=", line))
    return line.split("=", 1)[1].split()


@pytest.mark.parametrize("roadmap", re.findall(r"<!-- steps-(\w+):begin -->", "".join(TEXTS.values())))
def test_the_readmes_steps_tables_are_what_list_writes(roadmap, tmp_path, capsys):
    """Every steps table in README.md and docs/ is `list --roadmap R --readme PAGE` of today's step files, byte for
    byte."""
    from conftest import main
    page = home_of(f"steps-{roadmap}")
    copy = copy_pages(tmp_path, [page])[page]
    code, err = main(capsys, "list", "--roadmap", roadmap, "--readme", copy)
    assert code == 0, err
    assert copy.read_text() == TEXTS[page]


def test_the_makefile_refreshes_each_block_where_it_lives():
    """Each `--readme PAGE` of the Makefile names a page that holds the markers of what that command writes."""
    writes = {"table": "results-{roadmap}", "study": "study-{roadmap}", "sweep-report": "sweep-{name}"}
    commands = [line.split() for line in (ROOT / "Makefile").read_text().splitlines() if "--readme" in line]
    assert len(commands) >= 4
    for words in commands:
        command = words[words.index("runner.py") + 1]
        roadmap = words[words.index("--roadmap") + 1] if "--roadmap" in words else "resnet50"
        name = words[words.index(command) + 1]   # sweep-report's sweep
        pages = [words[i + 1] for i, word in enumerate(words) if word == "--readme"]
        for page in pages:
            assert f"<!-- {writes[command].format(roadmap=roadmap, name=name)}" in (ROOT / page).read_text(), (words, page)


# Markdown links and images, [text](target) or ![alt](target), outside code blocks and code spans.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page):
    """A link or image of README.md or docs/ to a file of the repository names one that is there, and a #part of a
    page names one of its headings."""
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", TEXTS[page], flags=re.S))
    targets = [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:", t)]   # http:, mailto: are not files
    assert page.name != "README.md" or len(targets) >= 10, "the landing page links its docs"
    for target in targets:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.relative_to(ROOT)} links {target}, which is not there"
        if anchor:
            assert anchor in heading_anchors(linked.read_text()), \
                f"{page.relative_to(ROOT)} links {target}: no such heading"


def test_the_readme_is_a_landing_page():
    """What it is, what it found (the study's figure near the top), how to set it up and see it work: short."""
    lines = README.splitlines()
    figure = next(n for n, line in enumerate(lines, 1) if line.startswith("![study](report/"))
    assert len(lines) <= 150 and figure <= 40, (len(lines), figure)
    assert "make test" in README and "make demo" in README
    assert "<!-- sweep-gap-answer:begin -->" in README and "<!-- sweep-gap-answer:end -->" in README   # the sweep's answer
