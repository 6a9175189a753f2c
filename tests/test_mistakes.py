"""Mistakes a user makes, through the real CLI: each exits 2 with exactly one line on stderr that names the
culprit, shows no traceback, and leaves every file on disk as it was (hashed before and after).

Each case is written as a user would make it (a recipe, an override, a file saved by another tool, a
flag misspelt) in a small world: a recipe and its data, a local model folder, a finished run, a working
directory and a home directory holding the user's own files. Most cases stop before a model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, chat_rows, reversal_pairs, write_jsonl


@dataclass
class World:
    root: Path
    recipe: Path
    data: Path
    model: Path
    run: Path  # a finished tunekit run
    adapter: Path  # a LoRA adapter inside a run folder (runs/lora/final)

    def recipe_with(self, name: str, **changes: object) -> Path:
        """The recipe with sections changed (a dotted key: one value), written to `name`."""
        raw = yaml.safe_load(self.recipe.read_text())
        for key, value in changes.items():
            section, _, field = key.partition("__")
            if field:
                raw.setdefault(section, {})[field] = value
            else:
                raw[section] = value
        path = self.root / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path


@pytest.fixture
def world(tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    work, home = tmp_path / "work", tmp_path / "home"
    for folder, note in ((work, "my notes"), (home, "my home")):
        folder.mkdir()
        (folder / "notes.txt").write_text(note)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(reversal_pairs(20)))
    model = tmp_path / "models" / "llama"
    shutil.copytree(base, model)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "method: sft\n"
        "model:\n  name_or_path: tiny:llama\n"
        "adapter:\n  type: lora\n"
        f"data:\n  train: {data}\n  max_length: 64\n"
        "training:\n  learning_rate: 1.0e-3\n  max_steps: 2\n"
        f"output_dir: {tmp_path / 'runs' / 'new'}\n"
    )
    run = tmp_path / "runs" / "done"
    (run / "final").mkdir(parents=True)
    (run / "final" / "model.safetensors").write_bytes(b"weights of a finished run")
    for name, text in (("recipe.yaml", recipe.read_text()), ("metrics.jsonl", '{"step": 2}\n'), ("summary.json", "{}")):
        (run / name).write_text(text)
    adapter = tmp_path / "runs" / "lora" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base)})
    )
    (adapter.parent / "recipe.yaml").write_text(recipe.read_text())
    return World(tmp_path, recipe, data, model, run, adapter)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with the hash of its bytes (folders as "dir")."""
    found = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(result, *culprits: str) -> str:
    """Exit 2, one line on stderr beginning `error:`, naming every culprit, no traceback."""
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def hold_lock(folder: Path, command: str = "tunekit sft other.yaml") -> subprocess.Popen:
    """Another process holding the folder's lock, as a live run does (tunekit.folders)."""
    script = (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(folder / '.tunekit.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.write(fd, json.dumps({{'pid': os.getpid(), 'command': {command!r}}}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


Case = Callable[[World], tuple[list[str], list[str]]]  # the world -> (command line, what the error names)
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(made: Case) -> Case:
        CASES[name] = made
        return made

    return register


# ---- run folders ------------------------------------------------------------------------------------


@case("output_dir empty in the recipe, with --overwrite")
def _(w: World):
    return ["sft", str(w.recipe_with("r.yaml", output_dir="")), "--overwrite"], ["output_dir is empty"]


@case("output_dir= with nothing after it on the command line")
def _(w: World):
    return ["sft", str(w.recipe), "output_dir=", "--overwrite"], ["output_dir (from an override)"]


@case("output_dir the current directory, with --overwrite")
def _(w: World):
    return ["sft", str(w.recipe), "output_dir=.", "--overwrite"], ["output_dir .", "is the current directory"]


@case("output_dir a parent of the current directory")
def _(w: World):
    return ["sft", str(w.recipe), "output_dir=..", "--overwrite"], ["holds the current directory"]


@case("output_dir the home directory")
def _(w: World):
    return ["sft", str(w.recipe_with("r.yaml", output_dir="~")), "--overwrite"], ["output_dir ~", "your home directory"]


@case("output_dir the local model being fine-tuned, with --overwrite")
def _(w: World):
    args = ["sft", str(w.recipe), f"model.name_or_path={w.model}", f"output_dir={w.model}", "--overwrite"]
    return args, ["is the folder of model.name_or_path"]


@case("output_dir the folder holding the model")
def _(w: World):
    args = ["sft", str(w.recipe), f"model.name_or_path={w.model}", f"output_dir={w.model.parent}", "--overwrite"]
    return args, ["holds the folder of model.name_or_path"]


@case("output_dir the data's folder, with --overwrite")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.data.parent}", "--overwrite"], ["holds data.train", str(w.data)]


@case("output_dir a file")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.data}"], ["is a file"]


@case("output_dir a folder of the user's own, with --overwrite")
def _(w: World):
    mine = w.root / "runs" / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("a,b\n")
    return ["sft", str(w.recipe), f"output_dir={mine}", "--overwrite"], ["results.csv", "--overwrite-any"]


@case("output_dir a finished run, no flag")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.run}"], ["already exists", "--overwrite", "--resume"]


@case("--overwrite and --resume together")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.run}", "--overwrite", "--resume"], ["pass one of them"]


@case("--resume of a folder that is not a run")
def _(w: World):
    mine = w.root / "runs" / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("a,b\n")
    return ["sft", str(w.recipe), f"output_dir={mine}", "--resume"], ["results.csv", "not a tunekit run"]


@case("--resume of a finished run")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.run}", "--resume"], ["holds a finished run"]


@case("--force without --resume")
def _(w: World):
    return ["sft", str(w.recipe), "--force"], ["--force only applies with --resume"]


@case("a folder left by an interrupted swap beside output_dir")
def _(w: World):
    (w.run.parent / "done.previous").mkdir()
    return ["sft", str(w.recipe), f"output_dir={w.run}", "--overwrite"], ["done.previous"]


@case("a second run into the folder of a live run")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.run}", "--overwrite"], ["in use by another tunekit process", "pid"]


@case("merge into the folder of a live run")
def _(w: World):
    return ["merge", str(w.adapter), str(w.run), "--overwrite"], ["in use by another tunekit process", "pid"]


@case("merge into the adapter's own run folder, with --overwrite")
def _(w: World):
    return ["merge", str(w.adapter), str(w.adapter.parent), "--overwrite"], ["holds the adapter"]


@case("merge into the adapter folder itself")
def _(w: World):
    return ["merge", str(w.adapter), str(w.adapter), "--overwrite"], ["is the adapter"]


@case("merge over a training run, with --overwrite")
def _(w: World):
    return ["merge", str(w.adapter), str(w.run), "--overwrite"], ["not a model written by tunekit merge"]


@case("merge into the current directory")
def _(w: World):
    return ["merge", str(w.adapter), "."], ["is the current directory"]


@case("tiny-model into the current directory")
def _(w: World):
    return ["tiny-model", ".", "--overwrite"], ["DIR .", "is the current directory"]


@case("tiny-model over a folder of the user's own, with --overwrite")
def _(w: World):
    return ["tiny-model", str(w.data.parent), "--overwrite"], ["train.jsonl", "--overwrite-any"]


@case("recipes copy over a data file, with --overwrite")
def _(w: World):
    return ["recipes", "copy", "quickstart", str(w.data), "--overwrite"], ["is not a recipe", "--overwrite-any"]


@case("recipes copy into a folder that does not exist")
def _(w: World):
    return ["recipes", "copy", "quickstart", str(w.root / "nope" / "r.yaml")], ["does not exist"]


@case("output_dir with a name longer than the file system allows")
def _(w: World):
    return ["sft", str(w.recipe), f"output_dir={w.root / ('x' * 300)}"], ["File name too long"]


# ---- recipes ----------------------------------------------------------------------------------------


@case("learning rate .inf in the recipe")
def _(w: World):
    return ["sft", str(w.recipe_with("r.yaml", training__learning_rate=float("inf")))], ["training.learning_rate"]


@case("learning rate nan on the command line")
def _(w: World):
    return ["sft", str(w.recipe), "training.learning_rate=nan"], ["training.learning_rate", "finite"]


@case("a learning rate beyond float32, which PPO's optimizer cannot take")
def _(w: World):
    recipe = str(ROOT / "recipes" / "tiny" / "ppo.yaml")
    return ["ppo", recipe, "training.learning_rate=1e39", f"output_dir={w.root / 'ppo'}"], [
        "training.learning_rate",
        "float32",
    ]


@case("LoRA alpha inf")
def _(w: World):
    return ["sft", str(w.recipe), "adapter.alpha=.inf"], ["adapter.alpha", "finite"]


@case("a key given twice in the recipe")
def _(w: World):
    text = w.recipe.read_text().replace("  max_steps: 2\n", "  max_steps: 2\n  learning_rate: 1.0\n")
    path = w.root / "twice.yaml"
    path.write_text(text)
    return ["sft", str(path)], ["training.learning_rate is set twice", "lines 10 and 12"]


@case("QLoRA with an 8-bit base")
def _(w: World):
    return ["sft", str(w.recipe), "adapter.type=qlora", "model.quantization=8bit"], ["qlora", "8bit"]


@case("target_modules a single module name")
def _(w: World):
    return ["sft", str(w.recipe_with("r.yaml", adapter={"type": "lora", "target_modules": "q_proj"}))], [
        "adapter.target_modules",
        "[q_proj]",
    ]


@case("target_modules names joined by a comma on the command line")
def _(w: World):
    return ["sft", str(w.recipe), "adapter.target_modules=q_proj,v_proj"], ["[q_proj, v_proj]"]


@case("target_modules a broken regular expression")
def _(w: World):
    return ["sft", str(w.recipe), "adapter.target_modules=.*(proj"], ["adapter.target_modules", "regular expression"]


@case("a negative seed")
def _(w: World):
    return ["sft", str(w.recipe), "training.seed=-1"], ["training.seed"]


@case("a seed beyond 2^32")
def _(w: World):
    return ["sft", str(w.recipe), f"training.seed={2**40}"], ["training.seed"]


@case("a recipe saved in Latin-1")
def _(w: World):
    path = w.root / "latin.yaml"
    path.write_bytes(("# recette d'été\n" + w.recipe.read_text()).encode("latin-1"))
    return ["sft", str(path)], [str(path), "line 1", "save it as UTF-8"]


@case("a misspelt key")
def _(w: World):
    return ["sft", str(w.recipe), "training.learning_rat=1e-3"], ["learning_rat", "did you mean"]


@case("a DPO recipe given to tunekit sft")
def _(w: World):
    return ["sft", str(w.recipe_with("dpo.yaml", method="dpo"))], ["tunekit dpo", "not `tunekit sft`"]


@case("an override without =")
def _(w: World):
    return ["sft", str(w.recipe), "training.max_steps"], ["KEY.SUB=VALUE"]


@case("a recipe that does not exist")
def _(w: World):
    return ["validate", "recipe.yml"], ["recipe not found: recipe.yml"]


@case("fp16 on a machine without a GPU")
def _(w: World):
    return ["sft", str(w.recipe), "model.dtype=fp16"], ["model.dtype", "GPU"]


# ---- data -------------------------------------------------------------------------------------------


@case("JSONL data saved in Latin-1")
def _(w: World):
    path = w.root / "latin.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in chat_rows([("Say hi", "hi"), ("Say café", "café")])]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    return ["sft", str(w.recipe), f"data.train={path}"], [str(path), "line 2", "save it as UTF-8"]


@case("a CSV saved by Excel as Unicode text (UTF-16)")
def _(w: World):
    path = w.root / "excel.csv"
    path.write_bytes("prompt,completion\nhi,hello\n".encode("utf-16"))
    return ["sft", str(w.recipe), f"data.train={path}"], ["excel.csv", "UTF-16", "save it as UTF-8"]


@case("rows that are bare message lists")
def _(w: World):
    rows = [row["messages"] for row in chat_rows(reversal_pairs(3))]
    path = w.root / "bare.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["sft", str(w.recipe), f"data.train={path}"], ["row 1", "bare list of messages", '{"messages": [...]}']


@case("an empty assistant turn in messages")
def _(w: World):
    rows = chat_rows([("Say hi", "hi"), ("Say nothing", "")])
    return ["sft", str(w.recipe), f"data.train={write_jsonl(w.root / 'm.jsonl', rows)}"], [
        "row 2",
        "messages[1].content",
        "empty",
    ]


@case("an empty completion in prompt/completion data (the same rule)")
def _(w: World):
    rows = [{"prompt": "Say hi", "completion": "hi"}, {"prompt": "Say nothing", "completion": " "}]
    return ["sft", str(w.recipe), f"data.train={write_jsonl(w.root / 'pc.jsonl', rows)}"], [
        "row 2",
        "'completion'",
        "empty",
    ]


@case("an empty rejected answer in chat preference pairs")
def _(w: World):
    user = {"role": "user", "content": "Say hi"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "hi"}],
        "rejected": [user, {"role": "assistant", "content": ""}],
    }
    data = write_jsonl(w.root / "pairs.jsonl", [row])
    return ["dpo", str(w.recipe_with("dpo.yaml", method="dpo")), f"data.train={data}"], ["rejected[1].content", "empty"]


@case("a line of JSONL that is not JSON")
def _(w: World):
    path = w.root / "broken.jsonl"
    path.write_text(json.dumps(chat_rows([("a", "b")])[0]) + "\n{'prompt': 'single quotes'}\n")
    return ["sft", str(w.recipe), f"data.train={path}"], ["broken.jsonl, line 2", "invalid JSON"]


@case("a data file that does not exist")
def _(w: World):
    return ["sft", str(w.recipe), "data.train=data/train.jsonl"], ["data file not found: data/train.jsonl"]


@case("an Excel workbook as data")
def _(w: World):
    path = w.root / "rows.xlsx"
    path.write_bytes(b"PK\x03\x04 not really")
    return ["sft", str(w.recipe), f"data.train={path}"], ["unsupported file type .xlsx"]


@case("data.max_length that leaves no answer to train on")
def _(w: World):
    rows = [{"instruction": f"Reverse the words: {p}", "input": "", "output": c} for p, c in reversal_pairs(8)]
    data = write_jsonl(w.root / "alpaca.jsonl", rows)
    return ["sft", str(w.recipe), f"data.train={data}", "data.max_length=16"], ["data.max_length=16"]


@case("preference pairs given to tunekit sft")
def _(w: World):
    return ["sft", str(w.recipe), "data.train=builtin:reversal-preference"], ["format preference", "tunekit sft"]


@case("preference pairs given to tunekit eval")
def _(w: World):
    data = write_jsonl(w.root / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    return ["eval", "tiny:llama", "--data", str(data)], ["pairs.jsonl", "format preference", "tunekit score"]


@case("chat data given to tunekit score")
def _(w: World):
    return ["score", str(w.model), "--data", str(w.data)], ["format messages", "tunekit score needs"]


# ---- models -----------------------------------------------------------------------------------------


@case("a model.safetensors cut short by an interrupted copy")
def _(w: World):
    weights = w.model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return ["sft", str(w.recipe), f"model.name_or_path={w.model}"], ["model.safetensors", "cut short or damaged"]


@case("a model folder that does not exist")
def _(w: World):
    return ["sft", str(w.recipe), "model.name_or_path=./models/llama"], ["model folder not found: ./models/llama"]


@case("a model folder without config.json")
def _(w: World):
    (w.model / "config.json").unlink()
    return ["sft", str(w.recipe), f"model.name_or_path={w.model}"], ["neither config.json nor adapter_config.json"]


@case("generate with neither --prompt nor --file")
def _(w: World):
    return ["generate", "tiny:llama"], ["--prompt", "--file"]


# ---- the command line -------------------------------------------------------------------------------


@case("a misspelt flag")
def _(w: World):
    return ["sft", str(w.recipe), "--overwrit"], ["No such option: --overwrit", "--overwrite", "tunekit sft --help"]


@case("a training command without its recipe")
def _(w: World):
    return ["dpo"], ["Missing argument", "tunekit dpo --help"]


@case("--num-processes 0")
def _(w: World):
    return ["sft", str(w.recipe), "--num-processes", "0"], ["--num-processes"]


@case("a misspelt command")
def _(w: World):
    return ["sfft", str(w.recipe)], ["No such command 'sfft'"]


@case("tiny-model of an architecture it does not make")
def _(w: World):
    return ["tiny-model", "out", "--arch", "mamba"], ["--arch", "mamba"]


@case("an unknown accelerate config")
def _(w: World):
    return ["sft", str(w.recipe), "--accelerate-config", "zero9"], ["--accelerate-config zero9"]


LOCKED = {"a second run into the folder of a live run", "merge into the folder of a live run"}


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_exits_2_with_one_line_and_changes_nothing(cli, world: World, name: str) -> None:
    if name.startswith("fp16") and _has_cuda():
        pytest.skip("fp16 trains on a GPU")
    args, culprits = CASES[name](world)
    holder = hold_lock(world.run) if name in LOCKED else None
    try:
        before = snapshot(world.root)
        line = refused(cli(*args), *culprits)
        assert snapshot(world.root) == before, name
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    if holder is not None:
        assert f"pid {holder.pid}" in line and "tunekit sft other.yaml" in line


def test_tens_of_mistakes_are_covered() -> None:
    assert len(CASES) >= 50


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permission bits say")
def test_an_unreadable_data_file_and_an_unwritable_folder_are_named(cli, world: World) -> None:
    world.data.chmod(0)
    refused(cli("sft", str(world.recipe)), str(world.data), "Permission denied")
    world.data.chmod(0o644)
    locked = world.root / "readonly"
    locked.mkdir(mode=0o555)
    refused(cli("sft", str(world.recipe), f"output_dir={locked / 'run'}"), str(locked / "run"), "Permission denied")


def test_an_output_dir_on_a_read_only_file_system_is_named(cli, world: World) -> None:
    target = Path("/sys/tunekit-test-run")  # sysfs: read-only for every user in a container, root included
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys is writable here")
    refused(cli("sft", str(world.recipe), f"output_dir={target}"), str(target))
    assert not target.exists()


# ---- what is not a mistake --------------------------------------------------------------------------


def test_a_byte_order_mark_is_accepted_in_csv_jsonl_and_recipes(cli, world: World) -> None:
    """Excel's "CSV UTF-8", Notepad and PowerShell start UTF-8 files with a byte-order mark."""
    csv_path = world.root / "excel.csv"
    csv_path.write_bytes("\ufeffprompt,completion\nSay hi,hi\nSay yes,yes\n".encode())
    jsonl = world.root / "bom.jsonl"
    jsonl.write_bytes(("\ufeff" + "".join(json.dumps(r) + "\n" for r in chat_rows(reversal_pairs(4)))).encode())
    recipe = world.root / "bom.yaml"
    recipe.write_bytes(b"\xef\xbb\xbf" + world.recipe.read_bytes())
    for args in (
        [str(world.recipe), f"data.train={csv_path}"],
        [str(world.recipe), f"data.train={jsonl}"],
        [str(recipe)],
    ):
        result = cli("validate", *args)
        assert result.code == 0, result.err
    assert "prompt_completion" in cli("validate", str(world.recipe), f"data.train={csv_path}").out


def test_a_single_string_that_is_a_regex_still_targets_modules(cli, world: World) -> None:
    """peft's rule for one string: a regular expression over full module names; tunekit keeps it."""
    result = cli("validate", str(world.recipe), r"adapter.target_modules=.*\.(q_proj|v_proj)")
    assert result.code == 0, result.err
