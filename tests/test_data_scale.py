"""Data at scale: several sources mixed by weight, field names mapped, bad rows named deep in a large file,
the tokenised cache (hit, and rebuilt by each input it depends on), one tokenisation for a 2-process
launch, and streaming with flat memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe
from tunekit.config.sections import DataSection, Source
from tunekit.data import load_data
from tunekit.errors import DataError

PAIRS = reversal_pairs(60, seed=11)


def builds(cache: Path, step: str = "sft-tokens") -> list[dict]:
    """The cache builds of a step so far (tunekit.data.cache writes one line per build)."""
    log = cache / "data" / "builds.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    prefixes = ("tokenising", "packing") if step == "sft-tokens" else (step,)
    return [e for e in entries if e["step"].startswith(prefixes)]


# -- several sources ----------------------------------------------------------------------------------


def test_interleave_draws_sources_in_proportion_to_their_weights_reproducibly(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a {i}"} for i in range(900)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b {i}"} for i in range(900)])
    section = DataSection(
        train=[Source(path=str(a), weight=3), Source(path=str(b), weight=1)], mix="interleave", eval_fraction=0
    )
    data = load_data(section, seed=0, method="sft")
    given = {s.name: s.rows for s in data.sources}
    assert given[str(a)] == 900  # first_exhausted: it stops when a runs out
    assert 3 * 0.8 < given[str(a)] / given[str(b)] < 3 * 1.2  # 3:1 within 20%
    again = load_data(section, seed=0, method="sft")
    assert again.train["text"][:50] == data.train["text"][:50]  # seeded: the same draw
    other = load_data(section, seed=1, method="sft")
    assert other.train["text"][:50] != data.train["text"][:50]


def test_concat_keeps_every_row_and_all_exhausted_keeps_shares(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a {i}"} for i in range(300)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b {i}"} for i in range(100)])
    both = [Source(path=str(a)), Source(path=str(b))]
    data = load_data(DataSection(train=both, eval_fraction=0), seed=0, method="sft")
    assert [s.rows for s in data.sources] == [300, 100]
    longest = DataSection(train=both, mix="interleave", mix_stop="all_exhausted", eval_fraction=0)
    rows = {s.name: s.rows for s in load_data(longest, seed=0, method="sft").sources}
    assert rows[str(a)] >= 300 and rows[str(b)] >= 100  # the smaller source is repeated to keep its share


def test_sources_that_normalise_to_different_rows_are_refused(tmp_path: Path) -> None:
    chats = write_jsonl(tmp_path / "chat.jsonl", chat_rows(PAIRS[:5]))
    texts = write_jsonl(tmp_path / "text.jsonl", [{"text": "plain"}] * 5)
    with pytest.raises(DataError, match="sources trained together need one kind of row"):
        load_data(DataSection(train=[Source(path=str(chats)), Source(path=str(texts))]), seed=0, method="sft")


@pytest.mark.parametrize(
    ("rows", "columns", "roles", "kind", "check"),
    [
        (
            [{"question": "q", "answer": "a"}],
            {"prompt": "question", "completion": "answer"},
            {},
            "prompt_completion",
            lambda r: r["prompt"] == "q" and r["completion"] == "a",
        ),
        ([{"body": "some text"}], {"text": "body"}, {}, "text", lambda r: r["text"] == "some text"),
        (
            [{"dialog": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}],
            {"messages": "dialog", "role": "from", "content": "value"},
            {"human": "user", "bot": "assistant"},
            "messages",
            lambda r: r["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        ),
        (
            [{"q": "p", "good": "c", "bad": "r"}],
            {"prompt": "q", "chosen": "good", "rejected": "bad"},
            {},
            "preference",
            lambda r: (r["prompt"], r["chosen"], r["rejected"]) == ("p", "c", "r"),
        ),
        (
            [{"q": "p", "a": "c", "ok": True}],
            {"prompt": "q", "completion": "a", "label": "ok"},
            {},
            "unpaired",
            lambda r: r["label"] is True,
        ),
        (
            [{"sentence": "nice", "sentiment": "pos"}, {"sentence": "bad", "sentiment": "neg"}],
            {"text": "sentence", "label": "sentiment"},
            {},
            "classification",
            lambda r: r["label"] in ("pos", "neg"),
        ),
    ],
)
def test_columns_map_a_sources_own_field_names(tmp_path: Path, rows, columns, roles, kind, check) -> None:
    method = {"preference": "dpo", "unpaired": "kto", "classification": "classify"}.get(kind, "sft")
    path = write_jsonl(tmp_path / "d.jsonl", rows * 4)
    section = DataSection(train=[Source(path=str(path), columns=columns, roles=roles)], eval_fraction=0)
    data = load_data(section, seed=0, method=method)
    assert data.kind == kind and check(data.train[0])


# -- strict rows at scale ------------------------------------------------------------------------------


def test_a_bad_row_deep_in_a_large_file_names_its_line(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(40_000)]
    rows[31_337] = {"prompt": "p", "completion": ""}
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps(row) + "\n")
            if i == 100:
                handle.write("\n")  # a blank line: row numbers are the file's lines
    with pytest.raises(DataError, match=r"big.jsonl, row 31339: field 'completion': empty"):
        load_data(DataSection(train=str(path), num_proc=2), seed=0, method="sft")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(path.read_text().replace('"p20000"', '"p20000', 1))
    with pytest.raises(DataError, match=r"broken.jsonl, line 20002: invalid JSON"):
        load_data(DataSection(train=str(broken)), seed=0, method="sft")


# -- the tokenised cache --------------------------------------------------------------------------------


def sft_recipe(tmp_path: Path, data: Path, **settings: object) -> Path:
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data), "max_length": 64, **settings},
        training={"learning_rate": 1e-3, "max_steps": 1, "batch_size": 4},
        output_dir=str(tmp_path / "run"),
    )


def test_a_second_identical_run_reuses_the_cache_and_a_learning_rate_keeps_it(cli, tmp_path: Path) -> None:
    cache = Path(os.environ["TUNEKIT_CACHE"])
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    recipe = sft_recipe(tmp_path, data)
    before = len(builds(cache))
    first = cli("preprocess", str(recipe))
    assert first.code == 0, first.err
    assert "cache: built" in first.out and len(builds(cache)) == before + 2  # train and eval
    again = cli("preprocess", str(recipe))
    assert "everything came from" in again.out and len(builds(cache)) == before + 2
    trained = cli("sft", str(recipe), "training.learning_rate=0.01")
    assert trained.code == 0, trained.err
    assert len(builds(cache)) == before + 2  # the learning rate changes no token
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_sources"] == [{"source": str(data), "rows": 54}]


@pytest.mark.parametrize(
    "change",
    ["content", "tokenizer", "format", "columns", "max_length", "train_on", "packing", "seed", "too_long"],
)
def test_each_input_of_the_tokens_rebuilds_them(cli, tmp_path: Path, change: str) -> None:
    cache = Path(os.environ["TUNEKIT_CACHE"])
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"question": p, "answer": c} for p, c in PAIRS])
    source = {"path": str(data), "columns": {"prompt": "question", "completion": "answer"}}
    recipe = sft_recipe(tmp_path, data)
    recipe.write_text(recipe.read_text().replace(f"train: {data}", "train:\n  - " + json.dumps(source)))
    assert cli("preprocess", str(recipe)).code == 0
    count = len(builds(cache))
    overrides: list[str] = []
    if change == "content":
        write_jsonl(data, [{"question": p, "answer": c + " again"} for p, c in PAIRS])
    elif change == "tokenizer":  # the same model with another chat template in its folder
        model = tmp_path / "model"
        import shutil

        from tunekit.models.tiny import ensure_tiny

        shutil.copytree(ensure_tiny("tiny:llama"), model)
        config = json.loads((model / "tokenizer_config.json").read_text())
        (model / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
        (model / "tokenizer_config.json").write_text(json.dumps(config))
        (model / "tokenizer.json").write_text(
            (model / "tokenizer.json").read_text().replace('"<|user|>"', '"<|human|>"')
        )
        overrides = [f"model.name_or_path={model}"]
    elif change == "format":
        overrides = ["data.format=prompt_completion"]
    elif change == "columns":  # the same file, its fields the other way round
        recipe.write_text(
            recipe.read_text().replace(
                '"prompt": "question", "completion": "answer"', '"prompt": "answer", "completion": "question"'
            )
        )
    else:
        overrides = {
            "max_length": ["data.max_length=48"],
            "train_on": ["data.train_on=all"],
            "packing": ["data.packing=true"],
            "seed": ["training.seed=7"],
            "too_long": ["data.too_long=drop"],
        }[change]
    rebuilt = cli("preprocess", str(recipe), *overrides)
    assert rebuilt.code == 0, rebuilt.err
    assert len(builds(cache)) > count, change


def test_two_processes_tokenise_once(tmp_path: Path) -> None:
    """The relaunching command builds the cache in its preflight; both launched ranks load it."""
    cache = tmp_path / "cache"
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    recipe = sft_recipe(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_RANK", "RANK")}
    env["TUNEKIT_CACHE"] = str(cache)
    done = subprocess.run(
        [sys.executable, "-m", "tunekit", "sft", str(recipe), "--num-processes", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = builds(cache)
    assert len(made) == 2 and len({e["pid"] for e in made}) == 1  # train and eval, by one process


# -- streaming ------------------------------------------------------------------------------------------


def test_streaming_sft_trains_with_held_out_rows(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    recipe = sft_recipe(tmp_path, data, streaming=True, eval_rows=8)
    recipe.write_text(recipe.read_text().replace("max_steps: 1", "max_steps: 20"))
    trained = cli("sft", str(recipe))
    assert trained.code == 0, trained.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["eval_examples"] == 8
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["data_sources"] == [{"source": str(data), "rows": None}]
    refused = cli("validate", str(recipe), "training.max_steps=-1")
    assert refused.code == 2 and "set training.max_steps" in refused.err


@pytest.mark.slow  # writes ~300 MB and trains 30 streamed steps in a subprocess
def test_streaming_pretrain_keeps_memory_flat(tmp_path: Path) -> None:
    from tests.conftest import WORDS

    corpus = tmp_path / "corpus.txt"
    line = " ".join(WORDS[:60]) + "\n"
    with corpus.open("w") as handle:
        for _ in range(300_000_000 // len(line)):
            handle.write(line)
    recipe = write_recipe(
        tmp_path / "stream.yaml",
        method="pretrain",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(corpus), "streaming": True, "eval_rows": 16, "shuffle_buffer": 1000},
        pretrain={"block_size": 64},
        training={"learning_rate": 1e-3, "max_steps": 30, "batch_size": 8},
        output_dir=str(tmp_path / "run"),
    )
    probe = (
        "import resource, sys\nfrom tunekit.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "pretrain", str(recipe)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split("peak_kb")[-1].strip()) / 1024
    print(f"streaming 300 MB of text: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1500  # the file is never loaded: memory stays that of the model and a buffer
