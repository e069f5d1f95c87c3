"""The one place that owns the world model's vocabulary and the token layout of a transition.

One transition (frame-skip: the next observation is the one after the whole action chunk)::

    <bos> instr... <head> h_t(K) <wrist> w_t(K) <act> a_t..a_{t+H-1} (H*7 bins) [sum_t (7 bins)]
    <head> h_{t+H}(K) <wrist> w_{t+H}(K) <rew> <yes>|<no> <eos>

Everything up to and including the second ``<head>`` is the prompt; the model generates the next
head view first, then the wrist view conditioned on it (interleaved view decoding), then the reward.

Keep tokens (``keep_codes``, the default): a generated code position whose code equals the one at
the same position of the current view is written ``<keep>``. Most of a LIBERO head view is static
over a chunk (about 70% of its codes), so the model learns "copy here, redraw the arm there" instead
of re-deriving every background code; decoding puts the current code back at each ``<keep>``.

Action sums (``action_sums``, off by default): the chunk's actions summed per dimension, binned on
ranges fitted to the training chunks' sums, follow the per-step bins. They add no information (the
model could add the 70 bins up itself) but hand it the chunk's net motion, which is what moves the arm
in the frame after the chunk, in 7 tokens.

Token id ranges: specials | instruction words | image codes (one codebook for both views) |
action bins (``n_bins`` per dimension, shared ids; the dimension is given by position). With a
pretrained LM backbone all of them follow its own vocabulary: every id is shifted by ``base_vocab``
(the LM's vocabulary size, 0 for a backbone trained from scratch), so the LM's rows stay as they
were. The module constants (``PAD``, ``YES``, ...) are the unshifted ids; ``layout.sp`` holds the
model ids. Bin edges
are fitted per action dimension from the data (uniform between the 1st and 99th percentile), the
actions are normalised to integers ``0..n_bins-1`` as in the paper, and decoded to bin centres.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>", "<head>", "<wrist>", "<act>", "<rew>", "<yes>", "<no>", "<unk>", "<keep>")
SP = {name: i for i, name in enumerate(SPECIALS)}
PAD, BOS, EOS, HEAD, WRIST, ACT, REW, YES, NO, UNK, KEEP = (SP[s] for s in SPECIALS)


class Specials(NamedTuple):
    """Model ids of the special tokens of one layout."""

    pad: int
    bos: int
    eos: int
    head: int
    wrist: int
    act: int
    rew: int
    yes: int
    no: int
    unk: int
    keep: int


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass(frozen=True)
class TokenLayout:
    words: tuple[str, ...]
    codebook_size: int
    codes_per_view: int
    chunk_size: int = 10
    action_dim: int = 7
    n_bins: int = 256
    action_low: tuple[float, ...] = field(default_factory=lambda: (-1.0,) * 7)
    action_high: tuple[float, ...] = field(default_factory=lambda: (1.0,) * 7)
    keep_codes: bool = True
    base_vocab: int = 0  # ids of a pretrained LM's own vocabulary come first (0: from scratch)
    action_sums: bool = False  # the chunk's per-dimension action sums follow its per-step bins
    sum_low: tuple[float, ...] = ()  # their bin ranges (fitted with action_sums)
    sum_high: tuple[float, ...] = ()

    # ------------------------------------------------------------------ ranges
    @cached_property
    def sp(self) -> Specials:
        return Specials(*(self.base_vocab + i for i in range(len(SPECIALS))))

    @property
    def word_offset(self) -> int:
        return self.base_vocab + len(SPECIALS)

    @property
    def code_offset(self) -> int:
        return self.word_offset + len(self.words)

    @property
    def bin_offset(self) -> int:
        return self.code_offset + self.codebook_size

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: ``base_vocab`` + this layout's tokens."""
        return self.bin_offset + self.n_bins

    @property
    def code_ids(self) -> list[int]:
        return list(range(self.code_offset, self.bin_offset))

    @property
    def view_ids(self) -> list[int]:
        """Tokens a generated view position may take: the codes, and ``<keep>`` when used."""
        return self.code_ids + ([self.sp.keep] if self.keep_codes else [])

    @property
    def target_len(self) -> int:
        """Generated tokens per transition: head K, <wrist>, wrist K, <rew>, answer."""
        return 2 * self.codes_per_view + 3

    @property
    def action_tokens(self) -> int:
        """Tokens between ``<act>`` and the next ``<head>``: the per-step bins and, with
        ``action_sums``, the chunk's sums."""
        return (self.chunk_size + int(self.action_sums)) * self.action_dim

    def max_len(self, max_words: int = 32) -> int:
        k, a = self.codes_per_view, self.action_tokens
        return 1 + max_words + (1 + k) * 2 + 1 + a + (1 + k) * 2 + 2 + 1

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, instructions, actions: np.ndarray, codebook_size: int, codes_per_view: int,
            chunk_size: int, n_bins: int = 256, keep_codes: bool = True, base_vocab: int = 0,
            chunk_sums: np.ndarray | None = None) -> TokenLayout:
        """Vocabulary from the instructions seen; bin ranges from the actions (N, action_dim), and with
        ``chunk_sums`` ((M, action_dim), :func:`chunk_sum` of the training chunks) the sums' ranges
        (``action_sums``)."""
        vocab = sorted({w for text in instructions for w in words_of(text)})
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, actions.shape[-1])
        lo, hi = _ranges(actions)
        slo, shi = _ranges(np.asarray(chunk_sums, np.float64)) if chunk_sums is not None else ((), ())
        return cls(words=tuple(vocab), codebook_size=codebook_size, codes_per_view=codes_per_view,
                   chunk_size=chunk_size, action_dim=actions.shape[1], n_bins=n_bins,
                   action_low=lo, action_high=hi, keep_codes=keep_codes, base_vocab=base_vocab,
                   action_sums=chunk_sums is not None, sum_low=slo, sum_high=shi)

    # ------------------------------------------------------------------ encode / decode
    @cached_property
    def _word_ids(self) -> dict[str, int]:
        return {w: self.word_offset + i for i, w in enumerate(self.words)}

    def encode_instruction(self, text: str) -> list[int]:
        return [self._word_ids.get(w, self.sp.unk) for w in words_of(text)]

    def action_bins(self, actions: np.ndarray) -> np.ndarray:
        return _bins(actions, self.action_low, self.action_high, self.n_bins)

    def bins_to_actions(self, bins: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.action_low), np.asarray(self.action_high)
        return lo + (np.asarray(bins) + 0.5) / self.n_bins * (hi - lo)

    def _codes(self, codes: np.ndarray) -> list[int]:
        codes = np.asarray(codes).reshape(-1)
        if codes.shape[0] != self.codes_per_view:
            raise ValueError(f"a view has {codes.shape[0]} codes; this layout expects {self.codes_per_view}")
        return (codes + self.code_offset).tolist()

    def prompt(self, instruction: str, head: np.ndarray, wrist: np.ndarray, actions: np.ndarray) -> list[int]:
        """Context of one transition, ending with the ``<head>`` that opens the next observation."""
        actions = full_chunk(actions, self.chunk_size, self.action_dim)
        bins = self.action_bins(actions).reshape(-1)
        if self.action_sums:
            bins = np.concatenate([bins, _bins(actions.sum(0), self.sum_low, self.sum_high, self.n_bins)])
        bins = (bins + self.bin_offset).tolist()
        sp = self.sp
        return ([sp.bos, *self.encode_instruction(instruction), sp.head, *self._codes(head), sp.wrist,
                 *self._codes(wrist), sp.act, *bins, sp.head])

    def target(self, next_head: np.ndarray, next_wrist: np.ndarray, success: bool,
               head: np.ndarray | None = None, wrist: np.ndarray | None = None) -> list[int]:
        """What the model generates after the prompt (plus ``<eos>``); ``head``/``wrist`` are the
        current views' codes, needed with ``keep_codes``."""
        if self.keep_codes:
            if head is None or wrist is None:
                raise ValueError("this layout writes <keep> tokens: pass the current head and wrist codes")
            nh, nw = self._kept(next_head, head), self._kept(next_wrist, wrist)
        else:
            nh, nw = self._codes(next_head), self._codes(next_wrist)
        sp = self.sp
        return [*nh, sp.wrist, *nw, sp.rew, sp.yes if success else sp.no, sp.eos]

    def _kept(self, nxt: np.ndarray, cur: np.ndarray) -> list[int]:
        ids = np.asarray(self._codes(nxt))
        return np.where(np.asarray(nxt).reshape(-1) == np.asarray(cur).reshape(-1), self.sp.keep, ids).tolist()

    def segments(self) -> dict[str, slice]:
        """Positions of each segment within :meth:`target`."""
        k = self.codes_per_view
        return {"head": slice(0, k), "wrist": slice(k + 1, 2 * k + 1), "reward": slice(2 * k + 2, 2 * k + 3)}

    def current_codes(self, prompt) -> tuple[np.ndarray, np.ndarray]:
        """(head, wrist) codes of the current observation, read back from a :meth:`prompt`."""
        k, a = self.codes_per_view, self.action_tokens
        tail = np.asarray(prompt[-(2 * k + a + 4) :])  # <head> h <wrist> w <act> bins <head>
        sp = self.sp
        if len(tail) != 2 * k + a + 4 or tail[0] != sp.head or tail[k + 1] != sp.wrist or tail[2 * k + 2] != sp.act:
            raise ValueError("not a transition prompt of this layout")
        return tail[1 : k + 1] - self.code_offset, tail[k + 2 : 2 * k + 2] - self.code_offset

    def split_target(self, tokens, prompt=None) -> tuple[np.ndarray, np.ndarray]:
        """Generated tokens -> (head codes, wrist codes) in codebook index space; ``<keep>`` tokens
        take the current view's code at their position, read from ``prompt``."""
        t = np.asarray(tokens)
        seg = self.segments()
        head, wrist, keep = t[seg["head"]], t[seg["wrist"]], self.sp.keep
        if (head == keep).any() or (wrist == keep).any():
            if prompt is None:
                raise ValueError("generated tokens hold <keep>: pass the prompt that holds the current codes")
            ch, cw = self.current_codes(prompt)
            return (np.where(head == keep, ch, head - self.code_offset),
                    np.where(wrist == keep, cw, wrist - self.code_offset))
        return head - self.code_offset, wrist - self.code_offset

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())  # a layout.json without base_vocab loads as 0

    @classmethod
    def from_json(cls, text: str) -> TokenLayout:
        data = json.loads(text)
        for key in ("words", "action_low", "action_high", "sum_low", "sum_high"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TokenLayout:
        return cls.from_json(Path(path).read_text())


def full_chunk(actions: np.ndarray, chunk_size: int, action_dim: int) -> np.ndarray:
    """A chunk's actions as ``(chunk_size, action_dim)``; one cut short by the episode's end holds
    still (its last action repeated)."""
    actions = np.asarray(actions).reshape(-1, action_dim)
    if len(actions) < chunk_size:
        if not len(actions):
            return np.zeros((chunk_size, action_dim))
        actions = np.concatenate([actions, np.repeat(actions[-1:], chunk_size - len(actions), axis=0)])
    return actions[:chunk_size]


def chunk_sum(actions: np.ndarray, chunk_size: int, action_dim: int) -> np.ndarray:
    """The per-dimension sum of a chunk's actions as the prompt writes them (``action_sums``)."""
    return full_chunk(actions, chunk_size, action_dim).sum(0)


def _ranges(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bin range per dimension: the 1st to the 99th percentile (widened where they meet)."""
    lo, hi = np.percentile(x, 1, axis=0), np.percentile(x, 99, axis=0)
    hi = np.where(hi - lo < 1e-6, lo + 1e-3, hi)
    return tuple(map(float, lo)), tuple(map(float, hi))


def _bins(x: np.ndarray, low, high, n_bins: int) -> np.ndarray:
    lo, hi = np.asarray(low), np.asarray(high)
    u = (np.asarray(x, dtype=np.float64) - lo) / (hi - lo)
    return np.clip(np.floor(u * n_bins), 0, n_bins - 1).astype(np.int64)
