"""An LLM judge asked for rewards: built, called and cached exactly as an evaluation does it.

`judge:MODEL` and `pairwise:MODEL` share this: the judge is `judges.factory.build_judge`'s (the
same backends, modes, prompt templates and parsing as `--judge MODEL`), its verdicts come
through `engine.verdicts.judge_items` (a verdict that does not parse is asked again up to the
judge's `retries`, sampled), and every verdict is kept for the run under the engine's
verdict-cache key (the judge's identity hash plus the judge item), so a (prompt, completion)
sampled again, in a later step or another group, is never sent to the judge twice. A verdict
that still does not parse is counted (`failures`) and logged; the rewarder says what it is
worth. A judge that cannot be reached stops the run with one line naming the reward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from evalharness.engine.requests import Message, canonical_json, sha256_hex, to_jsonable
from evalharness.errors import BackendError, InputError

from .base import Rollout

log = logging.getLogger(__name__)


def build_llm_judge(reward: str, judge_spec: str, protocol: str, **options: Any) -> Any:
    """`build_judge(judge_spec, ...)` for a reward spec, refused unless it is an LLM judge
    (a reward model or a rule judge is a reward kind of its own: `rm:`, `rules:`)."""
    from evalharness.judges.factory import build_judge
    from evalharness.judges.llm import LLMJudge

    try:
        judge = build_judge(judge_spec, **options)
    except (InputError, BackendError) as exc:
        raise type(exc)(f"reward {reward}: {exc}") from None
    if not isinstance(judge, LLMJudge):
        raise InputError(
            f"reward {reward}: {judge_spec} is not an LLM judge; name it as a reward of its own "
            f"({judge_spec.partition(':')[0]}:...)"
        )
    judge.check_protocol(protocol)
    return judge


def prompt_messages(rollout: Rollout) -> tuple[Message, ...]:
    """The rollout's prompt as the judges' message type."""
    return tuple(Message(m["role"], m["content"]) for m in rollout.prompt)


class CachedJudge:
    """One LLM judge's verdicts for a run, each judge item asked at most once."""

    def __init__(self, reward: str, judge: Any) -> None:
        self.reward, self.judge = reward, judge
        self._judge_hash = judge.identity_hash
        self._verdicts: dict[str, dict[str, Any]] = {}
        #: Items sent to the judge, answered from this run's cache, and whose verdict did not
        #: parse even after the judge's retries.
        self.judged = self.cached = self.failures = 0

    def key(self, item: Any) -> str:
        """The engine's verdict-cache key (`engine.judging`): judge identity plus item."""
        material = {"item": to_jsonable(item), "extra": self.judge.item_key_fields(item)}
        return sha256_hex(self._judge_hash + canonical_json(material))

    def verdicts(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        """A verdict per item, in order: cached ones reused, the rest judged in one batch."""
        from evalharness.engine.verdicts import judge_items

        keys = [self.key(item) for item in items]
        missing: dict[str, Any] = {}
        for key, item in zip(keys, items, strict=True):
            if key not in self._verdicts:
                missing.setdefault(key, item)
        self.cached += len(items) - len(missing)
        if missing:
            try:
                fresh = judge_items(self.judge, list(missing.values()))
            except (InputError, BackendError) as exc:
                raise type(exc)(f"reward {self.reward}: {exc}") from None
            self.judged += len(fresh)
            failed = sum(bool(v.get("failure")) for v in fresh)
            if failed:
                self.failures += failed
                log.warning(
                    "reward %s: %d of %d verdicts did not parse after %d retries (%d so far)",
                    self.reward,
                    failed,
                    len(fresh),
                    self.judge.retries,
                    self.failures,
                )
            self._verdicts.update(zip(missing, fresh, strict=True))
        return [self._verdicts[key] for key in keys]

    def stats(self) -> dict[str, int]:
        return {"judged": self.judged, "cached": self.cached, "failures": self.failures}

    def identity(self) -> dict[str, Any]:
        return self.judge.identity

    def close(self) -> None:
        if self.judge.backend is not None:
            self.judge.backend.close()
