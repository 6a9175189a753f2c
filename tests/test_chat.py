"""`tunekit chat` driven by scripted standard input: turns, history, /reset, /set, /exit, streaming."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_lora, write_jsonl

FIRST, SECOND = "Reverse the words: apple river stone", "And now: red green blue"
# A random model answers a chat prompt with special tokens first (decoded to ""): a LoRA-perturbed
# one through a seeded sample gives visible words to compare.
DECODING = ["--max-new-tokens", "8", "--temperature", "1", "--seed", "5"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunekit.models.tiny import ensure_tiny

    return make_lora(ensure_tiny("tiny:llama"), tmp_path_factory.mktemp("chat") / "lora", seed=3)


def chat(cli, monkeypatch: pytest.MonkeyPatch, model: Path, *lines: str, args: tuple[str, ...] = ()):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    return cli("chat", str(model), *DECODING, *args)


def generated(cli, model: Path, *args: str) -> str:
    result = cli("generate", str(model), *DECODING, *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["completion"]


def test_turns_follow_the_chat_template_with_history(cli, monkeypatch, model: Path, tmp_path: Path) -> None:
    result = chat(cli, monkeypatch, model, FIRST, SECOND, "/exit", "never read")
    assert result.code == 0, result.err
    banner, first, second = result.out.splitlines()[:3]
    assert banner.startswith(f"chatting with {model}") and "sampling (temperature 1" in banner
    assert first == generated(cli, model, "--prompt", FIRST)
    history = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": first.strip()},
        {"role": "user", "content": SECOND},
    ]
    prompts = write_jsonl(tmp_path / "history.jsonl", [{"prompt": history}])
    assert second == generated(cli, model, "--file", str(prompts))
    assert len(result.out.splitlines()) == 3  # nothing after /exit


def test_reset_forgets_the_conversation(cli, monkeypatch, model: Path) -> None:
    result = chat(cli, monkeypatch, model, FIRST, SECOND, "/reset", SECOND)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[3] == "(conversation cleared)"
    assert lines[4] == generated(cli, model, "--prompt", SECOND) != lines[2]


def test_set_changes_decoding_and_bad_commands_do_not_end_the_chat(cli, monkeypatch, model: Path) -> None:
    result = chat(
        cli,
        monkeypatch,
        model,
        "/set temperature 0",
        "/set top-k banana",
        "/frobnicate",
        "/set max-new-tokens 3",
        "/settings",
        FIRST,
    )
    assert result.code == 0, result.err
    assert "(greedy, max-new-tokens 8, seed 5)" in result.out
    assert "(greedy, max-new-tokens 3, seed 5)" in result.out
    assert "error: top-k: cannot read 'banana'" in result.err and "unknown command /frobnicate" in result.err
    reply = result.out.splitlines()[-1]
    assert reply == generated(cli, model, "--prompt", FIRST, "--temperature", "0", "--max-new-tokens", "3")


def test_replies_stream_in_pieces(model: Path) -> None:
    from tunekit.use.chat import ChatSession
    from tunekit.use.generate import Decoding
    from tunekit.use.load import load, resolve_reference

    session = ChatSession(load(resolve_reference(str(model))), Decoding(max_new_tokens=12, do_sample=True, seed=5))
    pieces: list[str] = []
    reply = session.reply(FIRST, write=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == reply
    assert session.messages()[-1]["content"] == reply.strip()
    assert [m["role"] for m in session.messages()] == ["user", "assistant"]


def test_model_without_chat_template_exits_2(cli, monkeypatch, tmp_path: Path) -> None:
    from tunekit.models.tiny import ensure_tiny

    plain = shutil.copytree(ensure_tiny("tiny:llama"), tmp_path / "plain")
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    result = chat(cli, monkeypatch, plain, FIRST)
    assert result.code == 2 and "has no chat template" in result.err
