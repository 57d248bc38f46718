"""Uniform draws keyed by a request's seed and an output position.

Sampling takes the token at output position t by inverting the cumulative distribution at one
uniform number u_t (`hierdraft.sampling`). Here u_t is a pure function of (key, t): it does not
depend on how many draws came before, nor on which step emits position t. Plain decoding and a
drafting method with the same seed therefore use the same u_t at every position, and since their
logits rows are equal bit for bit (batch invariance), they sample the same tokens.

The numbers are the SplitMix64 sequence (Steele, Lea and Flood, 2014): output t of a generator
seeded with s is the 64-bit finaliser applied to s + (t + 1) * the golden-ratio increment. The
request's key is passed through the finaliser first, so that neighbouring seeds (the bench seeds
its prompts seed, seed + 1, ...) start far apart in the sequence.
"""

from __future__ import annotations

__all__ = ["PositionDraws"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, odd: SplitMix64's increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MANTISSA_BITS = 53  # a float64 holds every multiple of 2^-53 in [0, 1) exactly
# an unseeded request's key comes from torch's global generator, so torch.manual_seed governs it
# as it governed torch.rand before; 2^62 stays inside what torch.randint accepts
_RANDOM_KEY_LIMIT = 1 << 62


def _finalise(z: int) -> int:
    """SplitMix64's output function: a bijection on 64-bit integers that mixes every bit."""
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


class PositionDraws:
    """The uniform number in [0, 1) of every output position of one request."""

    __slots__ = ("key", "_state")

    def __init__(self, key: int) -> None:
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"the key of the draws must be an int, got {type(key).__name__}")
        self.key = key
        self._state = _finalise(key & _MASK)

    @classmethod
    def from_seed(cls, seed: int | None) -> PositionDraws:
        """The draws of a request with ``seed``; without one, a key from torch's global generator."""
        if seed is None:
            import torch

            return cls(int(torch.randint(_RANDOM_KEY_LIMIT, ())))
        return cls(int(seed))

    def uniform(self, position: int) -> float:
        """u_position, a multiple of 2^-53 in [0, 1)."""
        if position < 0:
            raise ValueError(f"an output position is >= 0, got {position}")
        bits = _finalise((self._state + (position + 1) * _GOLDEN) & _MASK)
        return (bits >> (64 - _MANTISSA_BITS)) / float(1 << _MANTISSA_BITS)
