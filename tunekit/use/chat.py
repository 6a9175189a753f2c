"""Multi-turn chat with a model's chat template, streaming each reply as it is decoded.

    $ tunekit chat runs/quickstart/final
    $ printf 'Reverse the words: red green blue\\n/set temperature 0.7\\n/reset\\n/exit\\n' | tunekit chat tiny:llama
    >>> session = ChatSession(loaded, Decoding())                        # doctest: +SKIP
    >>> session.reply("Reverse the words: red green blue", write=print)  # doctest: +SKIP

Lines starting with `/` are commands (see HELP); anything else is the next user turn. When the
conversation outgrows the model's context, the oldest exchanges are dropped (the system prompt stays).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tunekit.data.chat import Messages, Prompt, render_prompt
from tunekit.errors import UserError
from tunekit.use.generate import Decoding, generate

HELP = """commands:
  /reset            forget the conversation (the system prompt stays)
  /set KEY VALUE    change decoding: temperature 0.7 (0: greedy), top-k 20, top-p 0.9, do-sample off,
                    max-new-tokens 64, num-beams 4, repetition-penalty 1.1, stop "###" (none: clear),
                    seed 0 (none: unseeded)
  /settings         show the decoding settings
  /help             this list
  /exit             leave (also /quit, or the end of input)"""


class ChatSession:
    def __init__(self, loaded: Any, decoding: Decoding, system: str | None = None) -> None:
        if not loaded.tokenizer.chat_template:
            raise UserError(
                f"{loaded.ref.name} has no chat template, so it cannot chat; use tunekit generate "
                "--no-chat-template for plain text continuation"
            )
        self.loaded, self.decoding, self.system = loaded, decoding, system
        self.turns: Messages = []  # user and assistant messages, oldest first, without the system prompt

    def reset(self) -> None:
        self.turns = []

    def messages(self) -> Messages:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def reply(self, text: str, write: Callable[[str], None], notify: Callable[[str], None] = print) -> str:
        """Answer `text` given the conversation so far; the reply is streamed through `write`."""
        self.turns.append({"role": "user", "content": text})
        prompt = self._fitted_prompt(notify)
        # Beams are ranked only at the end, and stop strings are cut only at the end: print those whole.
        streaming = self.decoding.num_beams == 1 and not self.decoding.stop
        [completion] = generate(self.loaded, [prompt], self.decoding, on_text=write if streaming else None)
        if not streaming:
            write(completion.text)
        # Templates put their own separator before the answer (and many models open with a space): keep it once.
        self.turns.append({"role": "assistant", "content": completion.text.strip()})
        return completion.text

    def _fitted_prompt(self, notify: Callable[[str], None]) -> Prompt:
        """The rendered conversation, dropping the oldest exchanges while it leaves no room for the reply."""
        limit = self.loaded.context_length
        while True:
            prompt = render_prompt(self.loaded.tokenizer, self.messages())
            n_tokens = len(self.loaded.tokenizer(prompt.text, add_special_tokens=False)["input_ids"])
            if limit is None or n_tokens + self.decoding.max_new_tokens <= limit or len(self.turns) <= 1:
                return prompt
            self.turns = self.turns[2:]  # one user turn and its answer
            notify(f"(dropped the oldest exchange to fit the {limit}-token context)")


def run_chat(
    session: ChatSession,
    lines: Iterable[str],
    write: Callable[[str], None],
    notify: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Read user turns and commands from `lines` until /exit or the end of input."""
    notify(f"chatting with {session.loaded.ref.name} ({session.decoding.describe()}); /help for commands")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("/"):
            session.reply(line, write, notify)
            write("\n")
            continue
        command, _, rest = line[1:].partition(" ")
        if command in ("exit", "quit"):
            return
        try:
            _command(session, command, rest.strip(), notify)
        except UserError as err:  # a mistyped command must not end the conversation
            warn(f"error: {err}")


def _command(session: ChatSession, command: str, rest: str, notify: Callable[[str], None]) -> None:
    if command == "reset":
        session.reset()
        notify("(conversation cleared)")
    elif command == "set":
        key, _, value = rest.partition(" ")
        if not key or not value.strip():
            raise UserError("usage: /set KEY VALUE, e.g. /set temperature 0.7")
        session.decoding.set(key, value)
        notify(f"({session.decoding.describe()})")
    elif command == "settings":
        notify(f"({session.decoding.describe()})")
    elif command == "help":
        notify(HELP)
    else:
        raise UserError(f"unknown command /{command}; /help lists them")
