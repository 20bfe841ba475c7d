"""How the fused backward walks its chunks, and where each chunk's `dL/dlogits` lives.

Pure arithmetic on shapes (no torch, no triton), so the schedules are tested on any machine.

The backward never holds `[N, V]` gradients of the logits. It materialises them a chunk at a
time (in the inputs' dtype, formed from float32 logits inside the Triton kernel) and hands each
chunk to two cuBLAS matmuls. Two schedules:

- `two-pass`: a row pass (`grad_hidden[rows] = dz[rows, :] @ W`) and a vocabulary pass
  (`grad_weight[cols] = dz[:, cols].T @ H`). Every gradient element is one matmul's float32
  sum, rounded once and written once: no atomics, no float32 copy of any gradient,
  bit-identical run to run. It recomputes the logits twice (5 head-sized matmuls in all with
  the forward).
- `one-pass`: the vocabulary pass alone; `grad_hidden` is summed over vocabulary chunks in a
  float32 `[N, D]` buffer (4 head-sized matmuls, N*D*4 more bytes). Also deterministic.

Scratch for the chunks costs (almost) no memory: until the vocabulary pass writes it, the weight
gradient is an allocated, unwritten `[V, D]` buffer. The row pass keeps its `[rows, V]` chunk
there (rows <= D), and the vocabulary pass keeps chunk j's `[N, cols]` in the part of the weight
gradient that chunks after j have not written yet. Only the last few chunks, when that tail is
too short, use a dedicated buffer of `workspace_elements` (1 MiB in bf16), or, in `one-pass`,
the hidden gradient's own buffer, which that schedule writes last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Schedule = Literal["two-pass", "one-pass"]
SCHEDULES: tuple[str, ...] = ("two-pass", "one-pass")

# Rows of a row-pass chunk; 1024 rows give the `[rows, V] @ [V, D]` matmul 8 x 32 output tiles
# of 128 x 128 (two waves on 132 SMs) and make each kernel launch long enough to amortise.
ROW_CHUNK = 1024
# Without the weight gradient to borrow (a frozen head), the row chunk is a real allocation:
# 256 rows x V, Liger's chunk size at V = 128k.
ROW_CHUNK_OWN_BUFFER = 256
# Vocabulary columns of a vocabulary-pass chunk: `[cols, N] @ [N, D]` gets 8 x 32 output tiles.
VOCAB_CHUNK = 1024
# The dedicated buffer for the vocabulary pass's last chunks: 512 Ki elements (1 MiB in bf16),
# small next to the gradients so the extra memory stays at theirs (CCE: gradients + 2 MiB).
WORKSPACE_ELEMENTS = 1 << 19
# Chunk widths are rounded down to this multiple when larger, so a chunk's row stride (its
# width) is a multiple of 128 bytes: tensor-core loads and cuBLAS prefer aligned leading
# dimensions, and later chunks start at aligned offsets whenever D is a multiple of 64.
ALIGN = 64


@dataclass(frozen=True)
class VocabChunk:
    """Columns `[start, stop)`; their `[N, stop - start]` gradient of the logits lives at element
    `scratch_offset` of the weight gradient's storage, or in the dedicated buffer when None."""

    start: int
    stop: int
    scratch_offset: int | None

    @property
    def cols(self) -> int:
        return self.stop - self.start


def _aligned(count: int) -> int:
    return count - count % ALIGN if count > ALIGN else count


def row_chunk_rows(n_rows: int, dim: int, *, borrow_weight_gradient: bool, chunk: int) -> int:
    """Rows per row-pass chunk: a `[rows, V]` chunk fits in the `[V, D]` weight gradient when
    rows <= D."""
    rows = min(chunk, dim) if borrow_weight_gradient else min(chunk, ROW_CHUNK_OWN_BUFFER)
    return max(1, min(rows, n_rows))


def vocab_chunks(
    vocab: int,
    dim: int,
    n_rows: int,
    *,
    chunk: int = VOCAB_CHUNK,
    workspace_elements: int = WORKSPACE_ELEMENTS,
) -> list[VocabChunk]:
    """The vocabulary pass's chunks, in order, each with where its `dz` is kept.

    Chunk j writes weight-gradient rows `[start, stop)`; its `dz` (n_rows x cols elements) sits
    right after them, in rows no earlier chunk wrote, so it must end before the buffer does:
    `(stop) * dim + n_rows * cols <= vocab * dim`. When that allows fewer columns than the
    dedicated buffer would, the dedicated buffer is used instead.
    """
    chunks: list[VocabChunk] = []
    own = max(1, min(chunk, workspace_elements // max(n_rows, 1)))
    start = 0
    while start < vocab:
        remaining = vocab - start
        fit = (remaining * dim) // (dim + n_rows)
        borrowed = _aligned(min(chunk, fit))
        if borrowed >= 1 and borrowed >= own:
            cols = borrowed
            chunks.append(VocabChunk(start, start + cols, (start + cols) * dim))
        else:
            cols = min(own, remaining)
            chunks.append(VocabChunk(start, start + cols, None))
        start += cols
    return chunks


def dedicated_elements(chunks: list[VocabChunk], n_rows: int) -> int:
    """Size of the dedicated buffer the chunks need (0 when every chunk borrows)."""
    return max((c.cols * n_rows for c in chunks if c.scratch_offset is None), default=0)
