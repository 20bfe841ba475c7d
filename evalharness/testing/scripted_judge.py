"""The scripted judge: what it answers, which requests fail, and the counters it keeps.

Judge pipelines are mostly plumbing around an HTTP API (concurrency, retries, caching, parsing,
failure accounting); they are tested and benchmarked against this script, put behind a real
OpenAI-compatible server by `judge_server.py`. The behaviour lives here without any HTTP, so
each rule reads, and is tested, as a plain function.

What it answers. The prompt is the system messages plus the last user message of a chat
request:

* a rating prompt (it contains `[[rating]]` or `Rating: [[`) gets `... Rating: [[N]]` with
  `N = 1 + sha256(last user message) mod 10`;
* a pairwise prompt (it contains `[[A]]`) gets `... [[A]]`, `[[B]]` or `[[C]]` (a tie). With the
  default rule, `longer`, the verdict goes to the longer answer (the texts between
  `[The Start of Assistant A's Answer]` and `[The End of Assistant A's Answer]`, likewise for B,
  stripped; for two-turn prompts, between `<|The Start of Assistant A's Conversation with
  User|>` and its end marker), and equal lengths tie. The rule depends on content only, so
  swapping A and B swaps the verdict: a position-consistency check must find no bias. The
  rules `first` and `second` always pick A or B, a maximally position-biased judge the same
  check must catch. When the markers are missing, the parity of the same hash picks A (even)
  or B (odd);
* anything else gets `OK`.

How faults are decided. A request's body is parsed and re-serialised canonically (sorted keys),
and its sha256 is its identity; the server counts how often it has seen each identity, so the
`k`-th arrival of the same body has attempt index `k` (0-based). The outcome is a pure function
of (seed, body hash, attempt), see `decide_outcome`: a uniform draw from sha256 of the three
falls into consecutive bands of width `rate_limit_rate` (429), `server_error_rate` (500),
`timeout_rate` (a hang of `timeout_sleep_s` before answering, so the client times out first),
and, on attempt 0 only, `garbage_rate` (HTTP 200 with `I cannot decide.`, no verdict); the rest
is a normal answer. Faults happen only on attempts 0 and 1, so a client that retries an
identical request at least twice always gets its answer in the end, while a client that does
not retry, or changes the request between attempts, sees the failures. Identical requests from
different callers share the count, as they would share a cache key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

#: The model id listed at /v1/models; requests may name any model and get it echoed back.
MODEL_NAME = "scripted-judge"
OK_TEXT = "OK"
GARBAGE_TEXT = "I cannot decide."
#: Faults are injected only on attempts 0 .. FAULTY_ATTEMPTS - 1 of the same body.
FAULTY_ATTEMPTS = 2
#: Keys of the outcome counters; `invalid` counts malformed requests (answered 400).
OUTCOMES = ("ok", "garbage", "429", "500", "timeout", "invalid")
A_START, A_END = "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]"
B_START, B_END = "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]"
#: Two-turn pairwise prompts (MT-Bench style) wrap whole conversations instead.
A_TURNS = (
    "<|The Start of Assistant A's Conversation with User|>",
    "<|The End of Assistant A's Conversation with User|>",
)
B_TURNS = (
    "<|The Start of Assistant B's Conversation with User|>",
    "<|The End of Assistant B's Conversation with User|>",
)
#: How often a hanging (timeout) request checks whether the server is shutting down.
_HANG_POLL_S = 0.05

Outcome = Literal["ok", "garbage", "429", "500", "timeout"]
PairwiseRule = Literal["longer", "first", "second"]


@dataclass(frozen=True)
class ScriptedJudgeConfig:
    """Latency, fault rates and verdict rule of a scripted judge.

    Rates are per-attempt probabilities; they are bands of one draw, so together they must not
    exceed 1. `seed` changes which bodies fail without changing the rates.
    """

    latency_s: float = 0.0
    garbage_rate: float = 0.0
    rate_limit_rate: float = 0.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_sleep_s: float = 30.0
    seed: int = 0
    pairwise_rule: PairwiseRule = "longer"
    #: Answer this many requests, then hold every later one until `ScriptedJudge.release()`.
    hold_after: int | None = None

    def __post_init__(self) -> None:
        rates = {
            "garbage_rate": self.garbage_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "server_error_rate": self.server_error_rate,
            "timeout_rate": self.timeout_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must sum to at most 1, got {sum(rates.values()):g}")
        if self.hold_after is not None and self.hold_after < 0:
            raise ValueError(f"hold_after must not be negative, got {self.hold_after}")
        if self.latency_s < 0 or self.timeout_sleep_s < 0:
            raise ValueError("latency_s and timeout_sleep_s must not be negative")
        if self.pairwise_rule not in ("longer", "first", "second"):
            raise ValueError(f"pairwise_rule must be longer, first or second: {self.pairwise_rule}")


def _text_hash(text: str) -> int:
    """A hash that is stable across processes and Python versions (unlike `hash()`)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def scripted_rating(user_text: str) -> int:
    """The rating, 1 to 10, given to a prompt whose last user message is `user_text`."""
    return 1 + _text_hash(user_text) % 10


def _between(text: str, start: str, end: str) -> str | None:
    begin = text.find(start)
    if begin < 0:
        return None
    begin += len(start)
    stop = text.find(end, begin)
    return None if stop < 0 else text[begin:stop].strip()


def _answer(text: str, *markers: tuple[str, str]) -> str | None:
    """The text inside the first pair of markers present (an empty answer still counts)."""
    for start, end in markers:
        found = _between(text, start, end)
        if found is not None:
            return found
    return None


def pairwise_verdict(user_text: str, rule: PairwiseRule = "longer") -> Literal["A", "B", "C"]:
    """`A`, `B` or `C` (tie) for a pairwise prompt, by the rule described in the module doc."""
    if rule == "first":
        return "A"
    if rule == "second":
        return "B"
    answer_a = _answer(user_text, (A_START, A_END), A_TURNS)
    answer_b = _answer(user_text, (B_START, B_END), B_TURNS)
    if answer_a is None or answer_b is None:
        return "A" if _text_hash(user_text) % 2 == 0 else "B"
    if len(answer_a) == len(answer_b):
        return "C"
    return "A" if len(answer_a) > len(answer_b) else "B"


def judge_answer(system_text: str, user_text: str, rule: PairwiseRule = "longer") -> str:
    """The scripted judge's full answer to a system prompt and last user message."""
    prompt = f"{system_text}\n{user_text}"
    if "[[rating]]" in prompt or "Rating: [[" in prompt:
        return f"Explanation: a scripted verdict. Rating: [[{scripted_rating(user_text)}]]"
    if "[[A]]" in prompt:
        return f"Explanation: a scripted verdict. [[{pairwise_verdict(user_text, rule)}]]"
    return OK_TEXT


def body_digest(payload: Any) -> str:
    """sha256 of a JSON body serialised canonically, so key order does not make a new body."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fault_draw(seed: int, digest: str, attempt: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, body hash, attempt)."""
    key = hashlib.sha256(f"{seed}\0{digest}\0{attempt}".encode()).digest()
    return int.from_bytes(key[:8], "big") / 2.0**64


def decide_outcome(config: ScriptedJudgeConfig, digest: str, attempt: int) -> Outcome:
    """What the `attempt`-th arrival (0-based) of the body with hash `digest` gets.

    Attempts from FAULTY_ATTEMPTS on always succeed; garbage is possible on attempt 0 only.
    """
    if attempt >= FAULTY_ATTEMPTS:
        return "ok"
    draw = fault_draw(config.seed, digest, attempt)
    bands: tuple[tuple[Outcome, float], ...] = (
        ("429", config.rate_limit_rate),
        ("500", config.server_error_rate),
        ("timeout", config.timeout_rate),
        ("garbage", config.garbage_rate if attempt == 0 else 0.0),
    )
    edge = 0.0
    for outcome, rate in bands:
        edge += rate
        if draw < edge:
            return outcome
    return "ok"


class ScriptedJudge:
    """The config, the per-body attempt counts and the counters of one server (`app.state.judge`).

    Endpoints run on the server's event loop while tests read `stats()` from their own thread,
    hence the lock.
    """

    def __init__(self, config: ScriptedJudgeConfig) -> None:
        self.config = config
        #: Set when the server is stopping, so hanging requests end instead of delaying it.
        self.closing = False
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._requests = 0
        self._admitted = 0
        self._held = 0
        self._released = False
        self._in_flight = 0
        self._peak_in_flight = 0

    def admit(self, digest: str) -> tuple[int, Outcome]:
        """Record one arrival of a body; its attempt index and decided outcome."""
        with self._lock:
            attempt = self._seen.get(digest, 0)
            self._seen[digest] = attempt + 1
            outcome = decide_outcome(self.config, digest, attempt)
            self._requests += 1
            self._counts[outcome] += 1
        return attempt, outcome

    async def wait_for_turn(self) -> None:
        """Return at once for the first `hold_after` requests; hold later ones until `release()`."""
        limit = self.config.hold_after
        with self._lock:
            self._admitted += 1
            if limit is None or self._admitted <= limit or self._released:
                return
            self._held += 1
        try:
            while not (self._released or self.closing):
                await asyncio.sleep(_HANG_POLL_S)
        finally:
            with self._lock:
                self._held -= 1

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count a request as in flight while it is being answered (for `peak_in_flight`)."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def release(self) -> None:
        """Let held requests, and every later one, through."""
        with self._lock:
            self._released = True

    def reject(self) -> None:
        """Record one malformed request."""
        with self._lock:
            self._requests += 1
            self._counts["invalid"] += 1

    def stats(self) -> dict[str, Any]:
        """The same counters `GET /stats` answers."""
        with self._lock:
            return {
                "requests": self._requests,
                "outcomes": dict(self._counts),
                "distinct_bodies": len(self._seen),
                "held": self._held,
                "peak_in_flight": self._peak_in_flight,
            }

    async def hang(self, seconds: float) -> None:
        """Sleep like a stuck upstream, but stop early once the server is closing."""
        deadline = time.monotonic() + seconds
        while not self.closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _HANG_POLL_S))
