"""`tunekit tag` on a tiny random BERT: it learns to tag people, places and organisations in held-out sentences
that name none of the training names (builtin:entities / entities-test), full and LoRA; `final/` names entities
through transformers' pipeline; tags come as names, integer ids or CoNLL files; bad rows exit 2 naming file,
row and field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_jsonl, write_recipe

ENTITIES = [json.loads(line) for line in (ROOT / "tunekit/datasets/entities.jsonl").read_text().splitlines()]
HELD_OUT = [json.loads(line) for line in (ROOT / "tunekit/datasets/entities-test.jsonl").read_text().splitlines()]
CONLL2003 = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# adapter: (steps, learning rate). LoRA on a random trunk moves far less than full training (see test bars).
SETTINGS = {"none": (600, 5e-3), "lora": (600, 5e-3)}


def recipe(tmp_path: Path, adapter: str = "none", train: object = "builtin:entities", **extra: object) -> Path:
    steps, lr = SETTINGS[adapter]
    data: dict[str, object] = {"train": str(train), "eval": "builtin:entities-test", "max_length": 128}
    data.update(extra.pop("data", {}))  # type: ignore[arg-type]
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="tag",
        model={"name_or_path": "tiny:bert"},
        adapter={"type": adapter, "r": 16, "alpha": 32, "dropout": 0.0},
        data=data,
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 16, "weight_decay": 0.1, "logging_steps": 200},
        output_dir=str(tmp_path / "run"),
        **extra,
    )


def summary_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def pipeline_f1(final: Path, rows: list[dict]) -> float:
    """Entity F1 of `pipeline("token-classification")` on the sentences as running text, its entities turned
    back into word tags by their character spans: what a user of final/ gets, with no tunekit code."""
    from seqeval.metrics import f1_score
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(final), aggregation_strategy="first")
    truth, guess = [], []
    for row in rows:
        text, starts, position = " ".join(row["tokens"]), [], 0
        for word in row["tokens"]:
            starts.append(position)
            position += len(word) + 1
        tags = ["O"] * len(row["tokens"])
        for found in tagger(text):
            inside = [i for i, s in enumerate(starts) if found["start"] <= s < found["end"]]
            for n, i in enumerate(inside):
                tags[i] = ("B-" if n == 0 else "I-") + found["entity_group"]
        truth.append(row["tags"])
        guess.append(tags)
    return f1_score(truth, guess)


def test_full_fine_tuning_tags_unseen_names_and_pipeline_names_the_entities(cli, tmp_path: Path) -> None:
    result = cli("tag", str(recipe(tmp_path)))
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    assert summary["data_format"] == "tagging" and summary["tag_scheme"] == "iob2"
    assert summary["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    # A random head: entities nearly never right. After: 0.71 entity F1 on this CPU (held-out names, 600 steps).
    assert summary["eval_f1_before"] < 0.1 and summary["eval_accuracy_before"] < 0.4
    assert summary["eval_f1_after"] >= 0.6 and summary["eval_accuracy_after"] >= 0.9
    assert summary["eval_precision_after"] > 0.5 and summary["eval_recall_after"] > 0.5
    assert summary["eval_loss_after"] < summary["eval_loss_before"] / 3
    assert summary["trainable_parameters"] == summary["total_parameters"]
    final = tmp_path / "run" / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(summary["labels"])}
    # Running text through plain transformers names the entities. It scores below training's figure (0.56 against
    # 0.71 here): the pipeline guesses where words start from the text, and where the tiny 1,024-token vocabulary
    # cannot merge a word's first character with its space (` .`, rare capitals), the bare space token and the rest
    # become two pipeline words, the second never trained. MiniLM's word pieces agree exactly (the slow test).
    assert pipeline_f1(final, HELD_OUT) >= 0.45


def test_lora_learns_and_trains_the_new_head_whole(cli, tmp_path: Path) -> None:
    result = cli("tag", str(recipe(tmp_path, "lora")))
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    # 0.04 -> 0.44 on this CPU: LoRA leaves the random embeddings and positions of the tiny model frozen.
    assert summary["eval_f1_after"] > summary["eval_f1_before"] + 0.25
    final = tmp_path / "run" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    from safetensors.torch import load_file

    saved = load_file(final / "adapter_model.safetensors")
    head = sum(t.numel() for name, t in saved.items() if "classifier" in name)
    lora = sum(t.numel() for name, t in saved.items() if "lora_" in name)
    assert head == 64 * 7 + 7 and not any("classifier" in name and "lora_" in name for name in saved)
    assert summary["trainable_parameters"] == lora + head


def test_integer_tags_named_by_tag_labels_from_parquet(cli, tmp_path: Path) -> None:
    """conll2003 on the Hub: `tokens` and integer `ner_tags`, their names in the dataset card's order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = {tag: i for i, tag in enumerate(CONLL2003)}
    rows = [{"tokens": r["tokens"], "ner_tags": [ids[t] for t in r["tags"]]} for r in ENTITIES[:64]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    path = recipe(tmp_path, train=tmp_path / "train.parquet", data={"eval": None, "eval_fraction": 0.25})
    unnamed = cli("tag", str(path), "training.max_steps=2")
    assert unnamed.code == 2 and "the tags are integers; set tag.labels" in unnamed.err
    assert not (tmp_path / "run").exists()
    named = cli("tag", str(path), "training.max_steps=2", f"tag.labels=[{','.join(CONLL2003)}]")
    assert named.code == 0, named.err
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(CONLL2003)}


def write_conll(path: Path, rows: list[dict]) -> Path:
    """CoNLL-2003's layout: token, POS, chunk and NER columns, -DOCSTART-, a blank line after each sentence."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for row in rows:
        lines += [f"{token} NN I-NP {tag}" for token, tag in zip(row["tokens"], row["tags"])] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_conll_files_train_and_validate(cli, tmp_path: Path) -> None:
    train = write_conll(tmp_path / "train.conll", ENTITIES[:40])
    held_out = write_conll(tmp_path / "eval.conll", HELD_OUT[:20])
    path = recipe(tmp_path, train=train, data={"eval": str(held_out)})
    shown = cli("validate", str(path), "--examples", "1")
    assert shown.code == 0, shown.err
    assert "40 train rows, format tagging (detected)" in shown.out and "eval: 20 rows" in shown.out
    first = " ".join(f"{w}/{t}" for w, t in zip(ENTITIES[0]["tokens"], ENTITIES[0]["tags"]))
    assert f"words tagged): {first}" in shown.out
    assert "train entities: " in shown.out and "tags (iob2): O, B-LOC" in shown.out
    assert cli("tag", str(path), "training.max_steps=2").code == 0

    # Rows are numbered by the line of their first token: the third sentence starts on line 3 + len of two.
    broken = write_conll(tmp_path / "broken.conll", ENTITIES[:3])
    lines = broken.read_text().splitlines()
    start = 3 + len(ENTITIES[0]["tokens"]) + 1 + len(ENTITIES[1]["tokens"]) + 1
    lines[start - 1] = lines[start - 1].rsplit(" ", 1)[0] + " I-NOPE"
    broken.write_text("\n".join(lines) + "\n")
    result = cli("validate", str(path), f"data.train={broken}", "data.eval_fraction=0", "data.eval=null")
    assert result.code == 2 and f"broken.conll, row {start}: field 'tags[0]': I-NOPE with no NOPE entity open" in (
        result.err
    )
    lines[start - 1] = lines[start - 1].split(" ")[0]
    broken.write_text("\n".join(lines) + "\n")
    one_column = cli("validate", str(path), f"data.train={broken}")
    assert one_column.code == 2 and f"broken.conll, line {start}: expected a token and its tag" in one_column.err


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"tokens": ["Anna", "flew"], "tags": ["B-PER"]}, "field 'tags': 1 tags for 2 tokens"),
        ({"tokens": ["Anna", ""], "tags": ["B-PER", "O"]}, "field 'tokens[1]': expected a word"),
        (
            {"tokens": ["Anna", "Berg"], "tags": ["O", "I-PER"]},
            "field 'tags[1]': I-PER with no PER entity open (after O)",
        ),
        ({"tokens": ["Anna", "Oslo"], "tags": ["B-PER", "I-LOC"]}, "field 'tags[1]': I-LOC with no LOC entity open"),
        ({"tokens": ["Anna", "flew"], "tags": ["B-PER", 0]}, "field 'tags[1]': tag names and integer ids mixed"),
        ({"tokens": ["Anna"], "tags": []}, "field 'tags': expected a non-empty list"),
    ],
)
def test_bad_rows_exit_2_naming_file_row_and_field(cli, tmp_path: Path, row: dict, problem: str) -> None:
    rows = ENTITIES[:5] + [row] + ENTITIES[5:40]
    result = cli("tag", str(recipe(tmp_path, train=write_jsonl(tmp_path / "train.jsonl", rows))))
    assert result.code == 2, result.err
    assert "train.jsonl, row 6" in result.err and problem in result.err
    assert not (tmp_path / "run").exists()


def test_unknown_tags_exit_2(cli, tmp_path: Path) -> None:
    held = HELD_OUT[:3] + [{"tokens": ["Anna", "sang"], "tags": ["B-ART", "O"]}]
    path = recipe(tmp_path, data={"eval": str(write_jsonl(tmp_path / "eval.jsonl", held))})
    result = cli("validate", str(path))
    assert result.code == 2 and "eval.jsonl, row 4: field 'tags[0]': 'B-ART' is not in the training rows" in result.err
    listed = cli("validate", str(recipe(tmp_path)), "tag.labels=[O,B-PER,I-PER,B-LOC,I-LOC]")
    assert listed.code == 2 and "'B-ORG' is not in tag.labels" in listed.err
    mixed = [{"tokens": ["Anna", "sang"], "tags": ["B-PER", "VERB"]}] + ENTITIES[:20]
    result = cli("validate", str(recipe(tmp_path, train=write_jsonl(tmp_path / "mixed.jsonl", mixed))))
    assert result.code == 2 and "mix entity tags" in result.err and "tag.scheme: plain" in result.err


def test_iob1_accepts_an_entity_opened_by_i(cli, tmp_path: Path) -> None:
    """The original CoNLL-2003 files: I-X opens an entity unless it follows another X entity (then B-X)."""
    iob1 = [{"tokens": r["tokens"], "tags": [t.replace("B-", "I-") for t in r["tags"]]} for r in ENTITIES[:60]]
    path = recipe(tmp_path, train=write_jsonl(tmp_path / "iob1.jsonl", iob1), data={"eval": None})
    refused = cli("validate", str(path))
    assert refused.code == 2 and "set tag.scheme: iob1" in refused.err
    assert cli("tag", str(path), "tag.scheme=iob1", "training.max_steps=2").code == 0
    assert summary_of(tmp_path)["tag_scheme"] == "iob1"


def test_plain_tags_are_scored_per_word(cli, tmp_path: Path) -> None:
    """Part-of-speech style tags: no entities; accuracy and macro F1 over tags."""
    words = {"the": "DET", "a": "DET", "cat": "NOUN", "dog": "NOUN", "runs": "VERB", "sleeps": "VERB"}
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(80):
        sentence = [str(rng.choice(["the", "a"])), str(rng.choice(["cat", "dog"])), str(rng.choice(["runs", "sleeps"]))]
        rows.append({"tokens": sentence, "tags": [words[w] for w in sentence]})
    path = recipe(tmp_path, train=write_jsonl(tmp_path / "pos.jsonl", rows), data={"eval": None})
    assert cli("tag", str(path), "training.max_steps=60").code == 0
    summary = summary_of(tmp_path)
    assert summary["tag_scheme"] == "plain" and summary["labels"] == ["DET", "NOUN", "VERB"]
    assert summary["eval_accuracy_after"] == 1.0 and summary["eval_tag_f1_after"] == 1.0
    assert "eval_f1_after" not in summary


def test_first_sub_word_token_carries_the_tag() -> None:
    from transformers import AutoTokenizer

    from tunekit.data.tagging import add_prefix_space
    from tunekit.methods.tag import encode
    from tunekit.models.tiny import ensure_tiny

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny("tiny:bert"))
    add_prefix_space(tokenizer.backend_tokenizer)
    row = {"tokens": ["Joaquin", "Nowicki", "flew", "."], "tags": ["B-PER", "I-PER", "O", "O"]}
    (encoded,), cut = encode(tokenizer, [row], {"O": 0, "B-PER": 1, "I-PER": 2}, 128)
    words = tokenizer([row["tokens"]], is_split_into_words=True).word_ids(0)
    firsts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    assert [encoded["labels"][i] for i in firsts] == [1, 2, 0, 0] and cut == 0
    assert all(label == -100 for i, label in enumerate(encoded["labels"]) if i not in firsts)
    # Running text tokenises each word as the pre-split words do (byte-level BPE given the prefix space).
    assert tokenizer(" ".join(row["tokens"]))["input_ids"] == encoded["input_ids"]
    (short,), cut = encode(tokenizer, [row], {"O": 0, "B-PER": 1, "I-PER": 2}, 8)
    assert cut == 1 and len(short["input_ids"]) == 8


def test_metrics_follow_seqeval() -> None:
    from tunekit.methods.tag import tagging_metrics

    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    truth = np.array([[1, 2, 0, 3, -100], [0, 3, 0, 0, 0]])  # entities: PER (0-1), LOC (3); LOC (1)
    guess = np.array([[1, 0, 0, 3, 0], [0, 3, 1, 0, 0]])  # PER cut short (wrong), LOC right; LOC right, extra PER
    figures = tagging_metrics(np.eye(4)[guess], truth, labels, "iob2")
    assert figures["precision"] == pytest.approx(2 / 4) and figures["recall"] == pytest.approx(2 / 3)
    assert figures["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert figures["accuracy"] == pytest.approx(7 / 9)


@pytest.mark.slow
def test_minilm_tags_unseen_names(cli, tmp_path: Path) -> None:
    result = cli("tag", str(ROOT / "recipes" / "tag-minilm.yaml"), f"output_dir={tmp_path / 'run'}")
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    assert summary["total_parameters"] > 22_000_000
    # 0.044 -> 0.970 entity F1 as shipped (100 steps), on a 2-core CPU
    assert summary["eval_f1_before"] < 0.1 and summary["eval_f1_after"] >= 0.9
    assert pipeline_f1(tmp_path / "run" / "final", HELD_OUT) == pytest.approx(summary["eval_f1_after"], abs=0.01)


def test_help(cli) -> None:
    result = cli("tag", "--help")
    assert result.code == 0 and "Token classification" in result.out
