"""A tiny random chat model built offline in seconds, so tests exercise real transformers code.

Nothing is downloaded: the tokenizer is trained here on generated text and the weights are
random but seeded, so every build of the directory is byte-for-byte the same model and tests
can compare backends (local, served) on identical numbers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SEED = 1234
VOCAB_SIZE = 400
BOS, EOS_TEXT, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, "<|im_start|>", EOS_TEXT, PAD]

# ChatML, as SmolLM2/Qwen use it: the assistant turn ends with <|im_end|>, which is the eos.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORD_TEXT = (
    "the a of and to in is it that was for on are with as his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said "
    "an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound "
    "no most people my over know water than call first who may down side been now find "
    "answer question rating score judge model helpful assistant user system paris france "
    "capital city river explain why because reason better worse good bad correct wrong"
)
WORDS = tuple(_WORD_TEXT.split())


def training_lines(n_lines: int = 400, seed: int = SEED) -> list[str]:
    """Generated English-like lines with digits, ratings in [[N]] and chat markers.

    The mix makes BPE learn merges for the strings judges and tests actually use
    ("Rating: [[7]]", numbers, common words) without shipping any corpus.
    """
    rng = random.Random(seed)
    lines = []
    for index in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        kind = index % 4
        if kind == 0:
            words.append(f"Rating: [[{rng.randint(1, 10)}]]")
        elif kind == 1:
            words.insert(rng.randint(0, len(words)), str(rng.randint(0, 2025)))
        elif kind == 2:
            words = [w.capitalize() if i == 0 else w for i, w in enumerate(words)]
            words[-1] += rng.choice([".", "?", "!", ","])
        else:
            words.append(f"[[{rng.choice('ABC')}]] {rng.randint(10, 99)}%")
        lines.append(" ".join(words))
    return lines


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (any text encodes) wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(training_lines(), trainer=trainer)
    # Raw text gets a BOS (like Llama) so scoring exercises the "first token has no logprob"
    # path; chat prompts are encoded without special tokens and carry their own markers.
    bos_id = core.token_to_id(BOS)
    core.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS_TEXT,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def tiny_config(
    config_class: Any,
    vocab_size: int,
    hidden_size: int,
    *,
    layers: int = 1,
    heads: int = 2,
    kv_heads: int = 1,
    **extra: Any,
) -> Any:
    """A transformers config of a few thousand weights: `hidden_size` wide, an MLP twice as
    wide, grouped-query attention with `kv_heads` key/value heads; `extra` for the rest."""
    return config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        **extra,
    )


def tiny_llama_config(tokenizer: Any, hidden_size: int, **options: Any) -> Any:
    """A tiny Llama config over the chat tokenizer, with the long context and wide random
    initialisation every tiny model here has."""
    from transformers import LlamaConfig

    return tiny_config(
        LlamaConfig,
        len(tokenizer),
        hidden_size,
        max_position_embeddings=4096,
        # Wider than the default 0.02 so the random model has peaked, non-tied distributions.
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        **options,
    )


def build_model(tokenizer: Any) -> Any:
    """A 2-layer Llama with grouped-query attention, seeded so the weights never change."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    config = tiny_llama_config(
        tokenizer,
        64,
        layers=2,
        heads=4,
        kv_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def build_tiny_chat_model(directory: Path) -> Path:
    """Write a loadable `hf:` checkpoint (safetensors + tokenizer + chat template) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_reward_model(directory: Path) -> Path:
    """A tiny sequence-classification reward model (one output) sharing the chat tokenizer."""
    return build_tiny_classifier(directory, ("reward",))


def build_tiny_classifier(directory: Path, labels: tuple[str, ...]) -> Path:
    """A tiny sequence classifier whose `id2label` names `labels` (one label: a reward model)."""
    import torch
    from transformers import LlamaForSequenceClassification

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = tiny_llama_config(
        tokenizer,
        32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(SEED)
    LlamaForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


#: A few common words the tiny tokenizer knows: prompts for training-data fixtures.
PROMPT_WORDS = ("the", "a", "of", "and", "water", "is", "good", "cat", "dog", "runs", "fast")
PROMPT_WORDS += ("slow", "blue", "red")


def phrase(rng: random.Random, n: int = 5) -> str:
    """`n` random words from PROMPT_WORDS."""
    return " ".join(rng.choice(PROMPT_WORDS) for _ in range(n))
