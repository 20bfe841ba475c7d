"""Chat prompts the generation benchmarks share, so their numbers are for the same inputs."""

from __future__ import annotations

from evalharness.engine.requests import GenerateRequest, Message, SamplingParams

# Short, distinct user turns of varied length and kind, so prompts differ in token count and a
# batch has some (realistic) left padding in its prefill.
CHAT_PROMPTS: tuple[str, ...] = (
    "Give me three tips for keeping a sourdough starter alive.",
    "What is the difference between a virus and a bacterium?",
    "Write a two-line poem about autumn rain.",
    "Explain recursion to a ten-year-old.",
    "List four uses for a paperclip other than holding paper.",
    "How do I convert 72 degrees Fahrenheit to Celsius?",
    "Suggest a name for a cafe that also sells second-hand books.",
    "Why is the sky blue during the day but red at sunset?",
    "Summarise the plot of a heist movie in three sentences, inventing the details.",
    "What should I pack for a weekend hiking trip in the mountains?",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "Write a Python one-liner that reverses a list.",
    "Describe the smell of a bakery early in the morning.",
    "What are the pros and cons of working from home?",
    "Give a short motivational message for someone starting to learn the piano.",
    "How does a refrigerator keep food cold?",
)


def build_requests(n_prompts: int, max_new_tokens: int) -> list[GenerateRequest]:
    """`n_prompts` greedy single-turn requests, cycling the fixed prompts with a numbered suffix.

    Distinct messages matter only for realism (the backend does not deduplicate), but a numbered
    suffix keeps them distinct when more prompts than `CHAT_PROMPTS` are asked for.
    """
    sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    requests = []
    for index in range(n_prompts):
        text = CHAT_PROMPTS[index % len(CHAT_PROMPTS)]
        if index >= len(CHAT_PROMPTS):
            text = f"{text} (variant {index // len(CHAT_PROMPTS) + 1})"
        requests.append(GenerateRequest(messages=(Message("user", text),), sampling=sampling))
    return requests
