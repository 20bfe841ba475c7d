"""One digest of a live model's weights, computed where the weights are.

A model evaluated in memory (`EvalCallback`, `evaluate(model, ...)`) is identified by its
weights, hashed at every evaluation: the cache must never serve answers of other weights.
Copying every tensor to the host for that cost a full device-to-host transfer of the model,
a second host copy of each tensor and a SHA-256 pass over all of it (about 10 s for 16 GB of
bfloat16 weights) at each evaluation.

- Tensors in host memory are fed to SHA-256 as they lie (no copy): with SHA-NI that is the
  fastest sound hash on a CPU, and the digest is the one earlier versions computed, so stored
  runs of a model on the CPU keep their cache.
- Tensors on an accelerator are reduced on the device by NH (the universal hash of UMAC,
  Black et al. 1999: 32-bit words plus key words mod 2^32, multiplied in pairs, summed mod
  2^64) in two lanes with independent keys, block by block (bounded scratch memory); only 16
  bytes per 256 KiB of weights come to the host, into the same SHA-256. For two different
  weight tensors the chance of equal values is at most 2^-64 over the keys; the keys are fixed
  (derived by splitmix64 from constants) so a digest is stable across processes and
  machines, which makes this a fingerprint against accidental collisions (a training step),
  not against someone crafting weights to collide.

The two kinds differ: the same weights on the CPU and on a GPU get different digests (each
digest is stable across runs, processes and GPUs: NH is exact integer arithmetic, so every
CUDA device and the CPU compute the same value for it). Computing NH on the CPU as well would
make them agree, at about 15 times the cost of SHA-256 there (6.4 s against 0.42 s for
SmolLM2-135M-sized float32 weights on a 2-core CPU), and would change every stored CPU identity.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

#: 32-bit words per NH chunk (256 KiB of weights); the chunk's two 64-bit lanes go to the host.
CHUNK_WORDS = 1 << 16
#: Chunks reduced at once: 16 MiB of weights, about 100 MiB of int64 scratch on the device.
BLOCK_CHUNKS = 64
_MASK32 = (1 << 32) - 1
_SCHEME = b"|nh2x64-v1|"


def state_sha256(model: Any) -> str:
    """One hash over the model's state dict: every tensor's name, dtype, shape and contents
    (its bytes on the host, its NH lanes on an accelerator)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        if data.device.type == "cpu":
            digest.update(_host_bytes(data))
        else:
            digest.update(_SCHEME)
            digest.update(nh_lanes(data).cpu().numpy().tobytes())
    return digest.hexdigest()


def _host_bytes(tensor: Any) -> memoryview:
    """The tensor's bytes without a copy (a non-contiguous view is made contiguous first)."""
    import torch

    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    return memoryview(flat.numpy())


def nh_lanes(tensor: Any) -> Any:
    """`[chunks, 2]` int64: NH of each 256 KiB chunk of the tensor's bytes, two lanes, computed
    on the tensor's device (the last chunk is zero-padded; the shape is hashed beside it)."""
    import torch

    words = _words(tensor)
    if not words.numel():
        return torch.zeros((0, 2), dtype=torch.int64, device=words.device)
    # A tensor smaller than a chunk (a norm's weight) is one chunk of its own even length.
    width = min(CHUNK_WORDS, words.numel() + words.numel() % 2)
    keys = _keys(str(words.device))[:, :, :width]
    lanes = []
    block = width * BLOCK_CHUNKS
    for start in range(0, words.numel(), block):
        part = words[start : start + block]
        rows = -(-part.numel() // width)
        values = torch.zeros(rows * width, dtype=torch.int64, device=words.device)
        values[: part.numel()] = part
        values.bitwise_and_(_MASK32)  # the word as an unsigned 32-bit number
        # (word + key) mod 2^32 per lane, then the two halves of each chunk multiplied
        # pairwise and summed: int64 products wrap, which is the mod 2^64 NH asks for.
        sums = values.view(rows, 1, width) + keys
        sums.bitwise_and_(_MASK32)
        halves = sums.view(rows, 2, 2, width // 2)
        lanes.append((halves[:, :, 0] * halves[:, :, 1]).sum(-1))
    return torch.cat(lanes)


def _words(tensor: Any) -> Any:
    """The tensor's bytes as int32 words (zero-padded to a whole word)."""
    import torch

    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    if flat.numel() % 4:
        flat = torch.cat([flat, flat.new_zeros(4 - flat.numel() % 4)])
    elif flat.storage_offset() % 4:  # a view into a larger tensor, not on a word boundary
        flat = flat.clone()
    return flat.view(torch.int32)


@lru_cache(maxsize=8)
def _keys(device: str) -> Any:
    """`[2, CHUNK_WORDS]` int64 key words in [0, 2^32) on `device`: splitmix64 of their index,
    in numpy's wrapping uint64 arithmetic (the same keys on every machine and torch version)."""
    import numpy as np
    import torch

    index = np.arange(2 * CHUNK_WORDS, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = index * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x6A09E667F3BCC908)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    words = (z & np.uint64(_MASK32)).astype(np.int64).reshape(2, CHUNK_WORDS)
    return torch.from_numpy(words).to(device).view(1, 2, CHUNK_WORDS)
