"""URIAL in-context alignment (`urial:[prompt=FILE:]MODEL`): the rendered prompt, the stop,
the prompt file option, the identity and a full run."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_json, tiny_run_args

from evalharness.backends import load_backend
from evalharness.backends import urial as urial_module
from evalharness.backends.spec import parse_model_spec, split_urial
from evalharness.backends.urial import (
    EXAMPLES,
    STOP,
    SYSTEM_PROMPT,
    UrialBackend,
    clean_answer,
    default_preamble,
    render,
)
from evalharness.engine.requests import (
    CompleteRequest,
    GenerateRequest,
    GenerateResult,
    Message,
    SamplingParams,
    ScoreRequest,
)
from evalharness.errors import InputError

TWO_TURNS = (
    Message("user", "Name a river."),
    Message("assistant", "The Nile."),
    Message("user", "How long is it?"),
)


def urial_reference_prompt(system_message: str, chats: list[str | None]) -> str:
    """URIAL's own rendering, transcribed from Re-Align/URIAL `src/fastchat_conversation.py`
    (commit 127f94e): `Conversation.get_prompt` for the `urial_backticks` template
    (`SeparatorStyle.URIAL`, roles ("# Query:", "# Answer:"), sep = sep2 = "```"), the one
    `unified_utils.apply_template` picks for the backtick prompt files; messages appended as it
    appends them (roles alternate, a final None for the answer to generate)."""
    roles, sep, sep2 = ("# Query:", "# Answer:"), "```", "```"
    messages = [(roles[i % 2], chat) for i, chat in enumerate(chats)]
    ret = system_message
    for role, message in messages:
        if message:
            ret += "\n" + role + "\n" + sep + "\n" + message + "\n" + sep2 + "\n"
        else:
            ret += "\n" + role + "\n" + sep + "\n"
    return ret


def test_prompt_is_urials_rendering_of_system_examples_and_dialogue() -> None:
    examples = [text for pair in EXAMPLES for text in pair]
    preamble = default_preamble()
    # The shipped preamble is URIAL's layout of the system text and the three examples, laid
    # out as URIAL's prompt files are (`urial_prompts/inst_1k_v4.help.txt`: the system text,
    # then fenced blocks one blank line apart, ending in a closing fence and a newline).
    system = f"# Instruction\n\n{SYSTEM_PROMPT}\n"
    assert preamble == urial_reference_prompt(system, examples)
    assert preamble.endswith("\n```\n") and "\n\n\n" not in preamble
    assert f"{SYSTEM_PROMPT}\n\n# Query:\n```\n{examples[0]}\n```\n\n# Answer:\n```\n" in preamble
    turns = [m.content for m in TWO_TURNS]
    expected = urial_reference_prompt(preamble, [*turns, None])
    assert render(preamble, TWO_TURNS) == expected
    # The whole prompt is URIAL's rendering of the system text and all eight turns.
    whole = urial_reference_prompt(system, [*examples, *turns, None])
    assert render(preamble, TWO_TURNS) == whole
    # Plain text: no chat template markers, examples in order, the open answer fence last.
    assert "<|im_start|>" not in whole
    positions = [whole.index(text) for text in [*examples, *turns]]
    assert positions == sorted(positions)
    assert whole.endswith("\n```\n\n# Query:\n```\nHow long is it?\n```\n\n# Answer:\n```\n")
    assert whole.count("\n# Query:\n") == 5 and whole.count("\n# Answer:\n") == 5


def test_system_message_becomes_an_instruction_block_before_the_dialogue() -> None:
    prompt = render("PRE", (Message("system", "Be brief."), Message("user", "Hi")))
    assert (
        prompt == "PRE\n\n# Instruction\n\nBe brief.\n\n# Query:\n```\nHi\n```\n\n# Answer:\n```\n"
    )
    with pytest.raises(InputError, match="user message"):
        render("PRE", (Message("user", "Hi"), Message("assistant", "Hello")))


def test_answer_loses_only_the_closing_fence() -> None:
    assert clean_answer("Paris.\n```\n\n") == "Paris."
    code = "Use:\n```python\nprint(1)\n```\nDone.\n```"
    assert clean_answer(code) == "Use:\n```python\nprint(1)\n```\nDone."
    assert clean_answer("no fence") == "no fence"


class RecordingModel:
    """Stands in for the wrapped base model: records raw-text requests, answers as a base
    model would (the answer, its closing fence, and the start of an invented next query cut
    by the stop string)."""

    def __init__(self) -> None:
        self.requests: list[CompleteRequest] = []

    def complete(self, requests: list[CompleteRequest]) -> list[GenerateResult]:
        self.requests += requests
        return [GenerateResult("It is long.\n```", 9, 4, "stop") for _ in requests]


def test_chat_requests_become_raw_text_with_urials_stop(tiny_model_dir: Path) -> None:
    backend = load_backend(parse_model_spec(f"urial:hf:{tiny_model_dir}"))
    assert isinstance(backend, UrialBackend)
    recorder = RecordingModel()
    backend.model = recorder  # type: ignore[assignment]
    sampling = SamplingParams(0.7, 33, seed=5)
    (result,) = backend.generate([GenerateRequest(TWO_TURNS, sampling)])
    (sent,) = recorder.requests
    assert sent.prompt == render(default_preamble(), TWO_TURNS)
    assert sent.stop == (STOP,) == ("# Query",)
    assert sent.sampling == sampling
    assert result.text == "It is long." and result.n_generated_tokens == 4


def test_real_model_continues_the_rendered_prompt(tiny_model_dir: Path) -> None:
    backend = load_backend(parse_model_spec(f"urial:hf:{tiny_model_dir}"))
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    request = GenerateRequest(TWO_TURNS, SamplingParams(0.0, 4))
    (wrapped,) = backend.generate([request])
    (raw,) = plain.complete(
        [
            CompleteRequest(
                render(default_preamble(), TWO_TURNS), stop=(STOP,), sampling=request.sampling
            )
        ]
    )
    assert wrapped.text == clean_answer(raw.text)
    # Not the chat template's answer: the prompt really is different text.
    (chat,) = plain.generate([request])
    assert wrapped.n_prompt_tokens > chat.n_prompt_tokens + 500
    # Scoring passes through to the base model unchanged.
    score = ScoreRequest(context="the capital of", continuation=" france")
    assert backend.score([score]) == plain.score([score])


def test_prompt_file_replaces_the_shipped_examples(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompt_file = tmp_path / "my_urial.txt"
    prompt_file.write_text(
        "# Instruction\n\nBe kind.\n\n# Query:\n```\nHi\n```\n\n# Answer:\n```\nHello!\n```\n"
    )
    own = load_backend(parse_model_spec(f"urial:prompt={prompt_file}:hf:{tiny_model_dir}"))
    assert isinstance(own, UrialBackend)
    prompt = own.prompt(TWO_TURNS)
    assert prompt.startswith("# Instruction\n\nBe kind.")
    assert SYSTEM_PROMPT not in prompt and EXAMPLES[0][0] not in prompt
    default = load_backend(parse_model_spec(f"urial:hf:{tiny_model_dir}"))
    plain = load_backend(parse_model_spec(f"hf:{tiny_model_dir}"))
    assert own.identity_hash != default.identity_hash != plain.identity_hash
    assert default.identity["model"] == plain.identity
    # The same prompt spelled as a file shares the default's answers; an edit does not.
    same = tmp_path / "default.txt"
    same.write_text(default_preamble())
    spelled = load_backend(parse_model_spec(f"urial:prompt={same}:hf:{tiny_model_dir}"))
    assert spelled.identity_hash == default.identity_hash
    same.write_text(default_preamble() + "\nOne more line.")
    edited = load_backend(parse_model_spec(f"urial:prompt={same}:hf:{tiny_model_dir}"))
    assert edited.identity_hash != default.identity_hash


def test_spec_parsing_and_errors(tmp_path: Path) -> None:
    assert split_urial("hf:/m") == ({}, "hf:/m")
    assert split_urial("prompt=/p.txt:vllm:org/base@main") == (
        {"prompt": "/p.txt"},
        "vllm:org/base@main",
    )
    assert split_urial("default") == ({}, "default")
    assert parse_model_spec("urial:smollm2").backend == "urial"
    for bad, match in (
        ("urial:openai:gpt-4o", "continues raw text"),
        ("urial:rm:/r", "continues raw text"),
        ("urial:temperature=1:hf:/m", "prompt=..."),
        ("urial:", "unknown model spec"),
    ):
        with pytest.raises(InputError, match=match):
            parse_model_spec(bad)
    missing = tmp_path / "missing.txt"
    with pytest.raises(InputError, match="missing.txt"):
        load_backend(parse_model_spec(f"urial:prompt={missing}:hf:{tmp_path}"))


def test_run_on_mt_bench_renders_both_turns_and_caches(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[tuple[Message, ...]] = []
    original = urial_module.render

    def recording_render(preamble: str, messages: tuple[Message, ...]) -> str:
        rendered.append(tuple(messages))
        return original(preamble, messages)

    monkeypatch.setattr(urial_module, "render", recording_render)
    # A short prompt file keeps the tiny model's prompts short; the shipped one is ~2k tokens.
    prompt_file = tmp_path / "short.txt"
    prompt_file.write_text("# Instruction\n\nBe kind.\n")
    spec = f"urial:prompt={prompt_file}:hf:{tiny_model_dir}"
    args = tiny_run_args(tiny_model_dir, tmp_path / "store.sqlite", "--limit", "1")
    args[args.index("--model") + 1] = spec
    first = run_json(capsys, *args)
    assert first["status"] == "complete"
    assert first["model"] == spec
    assert first["calls_made"]["model"] == 2  # two turns of one MT-Bench question
    first_turn, second_turn = sorted(rendered, key=len)
    assert [m.role for m in first_turn] == ["user"]
    assert [m.role for m in second_turn] == ["user", "assistant", "user"]
    assert second_turn[0] == first_turn[0]
    again = run_json(capsys, *args)
    assert again["calls_made"] == {"model": 0, "judge": 0}
