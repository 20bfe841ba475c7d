"""The tuning-free alignment methods, as `evalharness methods` lists them beside the losses.

They train nothing: each is a model spec that wraps another model (best-of-N, URIAL, ARGS,
DeAL), so it is evaluated, judged, cached and compared like any model. A row says how to spell
the spec, what its options are (defaults from the wrappers themselves) and what it does.
"""

from __future__ import annotations

from typing import Any


def tuning_free_rows() -> list[dict[str, Any]]:
    """One row per tuning-free method, in the shape of the training methods' rows (`name`,
    `data`, `reference`, `hyperparameters`, `summary`) plus its `spec`, its `options`' meanings
    and `kind`: `decoding-time` (the search changes how tokens are chosen) or `in-context`
    (the prompt changes)."""
    from evalharness.backends.args_decoding import ArgsBackend
    from evalharness.backends.deal import DealBackend

    return [
        {
            "name": "best_of_n",
            "spec": "bon:N:SCORER:MODEL",
            "kind": "decoding-time",
            "hyperparameters": {},
            "options": {
                "N": "(in the spec) samples per request, seeds seed..seed+N-1; the one rated "
                "highest is kept",
                "SCORER": "(in the spec) rm:REWARD_MODEL, self (the model as its own 1-10 "
                "judge) or a judge spec",
            },
            "summary": "N sampled answers, the one the reward model or judge rates highest",
        },
        {
            "name": "urial",
            "spec": "urial:[prompt=FILE:]MODEL",
            "kind": "in-context",
            "hyperparameters": {"prompt": None},
            "options": {
                "prompt": "a file holding the system text and examples, already in URIAL's "
                "`# Query:` / `# Answer:` format; default: the three examples shipped here",
            },
            "summary": "a base model aligned in context: system text, three stylistic "
            "examples, the dialogue as # Query / # Answer blocks, stop at the next # Query",
        },
        {
            "name": "args",
            "spec": "args:[k=K,w=W,max_tokens=T:]rm:REWARD_MODEL:MODEL",
            "kind": "decoding-time",
            "hyperparameters": dict(ArgsBackend.defaults),
            "options": {
                "k": "next-token candidates per step (the model's top k)",
                "w": "reward weight: score = log p(token) + w * reward(prompt + prefix + token)",
                "max_tokens": "new tokens at most (null: the request's own budget)",
            },
            "summary": "ARGS: at each step the top-k token with the best log-prob plus "
            "weighted reward of the extended answer",
        },
        {
            "name": "deal",
            "spec": "deal:[k=K,beam=B,lookahead=L,max_tokens=T:]rm:REWARD_MODEL:MODEL",
            "kind": "decoding-time",
            "hyperparameters": dict(DealBackend.defaults),
            "options": {
                "k": "extensions per beam per step (the model's top k next tokens)",
                "beam": "partial answers kept per step, ranked by the look-ahead's reward",
                "lookahead": "greedy tokens generated past each extension before it is scored",
                "max_tokens": "new tokens at most (null: the request's own budget)",
            },
            "summary": "DeAL: beam search over partial answers with the reward of a greedy "
            "look-ahead as heuristic; the finished answer with the highest reward wins",
        },
    ]
