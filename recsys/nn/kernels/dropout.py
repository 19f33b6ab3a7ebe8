"""The "uniform" dropout sampler (``model.dropout_sampler=uniform``): its keep masks and multipliers.

An element is kept for ``(1 - p) 2^16`` of the 2^16 values of a uniform 16-bit integer
(rounded: the keep rate is exact to 2^-16). On CPU the integers come from numpy's PCG64,
seeded by one draw from torch's generator per call, so ``torch.manual_seed`` still fixes
every mask; that is about 4x faster than ``torch.rand`` (one Mersenne-Twister float per
element, on one thread) and 6x faster than ``bernoulli_``. On other devices
``torch.rand < 1 - p`` is used. These are other draws than torch's Bernoulli dropout, so
other trajectories. ``recsys.nn.layers.dropout`` is the reference: inverted dropout, ``x``
times this multiplier.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_U16 = 1 << 16


def keep_mask(shape: torch.Size, keep: float, device: torch.device) -> torch.Tensor:
    """Bool tensor of ``shape``, each element True with probability ``keep`` (to 2^-16),
    independently: the "uniform" sampler's draw."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) < keep
    threshold = round(keep * _U16)  # keep where u < threshold, u uniform on 0 .. 2^16 - 1
    if threshold >= _U16:
        return torch.ones(shape, dtype=torch.bool)
    return torch.from_numpy(_uniform_keep(math.prod(shape), threshold)).view(shape)


def _uniform_keep(n: int, threshold: int) -> np.ndarray:
    """``n`` independent keep decisions (bool), each True with probability ``threshold / 2^16``.

    The integers ``u`` are numpy PCG64's stream, seeded by one draw from torch's generator
    (so ``torch.manual_seed`` fixes them), each 64-bit output split into four 16-bit lanes,
    lowest first: the values ``Generator.integers(0, 2^16, n, uint16)`` returns, taken
    straight from ``random_raw`` at less than half its cost. Each is read as a *signed*
    16-bit value ``s`` (``u`` below 2^15 as itself, the rest as ``u - 2^16``) and kept where
    ``s < threshold - 2^15``: ``threshold`` of the 2^16 equally likely values (``u`` below
    ``threshold - 2^15``, and every ``u`` from 2^15 up), so the rate is exact; the set
    every "uniform" run has used."""
    seed = int(torch.randint(0, 2**62, ()))
    words = np.random.default_rng(seed).bit_generator.random_raw(-(-n // 4))  # (ceil(n / 4),) uint64
    s = words.astype("<u8", copy=False).view("<i2")[:n]  # little-endian lanes, lowest first
    return s < np.int16(threshold - _U16 // 2)


# the integer types (numpy, torch) as wide as each float dtype whose multiplier numpy builds
_BITS = {torch.float32: (np.int32, torch.int32), torch.bfloat16: (np.int16, torch.int16),
         torch.float16: (np.int16, torch.int16)}


def keep_multiplier(shape: torch.Size, keep: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The "uniform" sampler's dropout multiplier: ``1 / keep`` (rounded to ``dtype``) where
    ``keep_mask`` keeps, else 0; the same mask from the same draws, the same values as
    ``keep_mask(...).to(dtype).mul_(1 / keep)``.

    On CPU, for fp32 / bf16 / fp16, numpy compares the integers and writes each element's
    bit pattern (the scale's or zero's) in two passes over 2- or 4-byte elements, about 10x
    cheaper than torch's comparison, bool-to-float cast and scaling (its int16 comparison
    and bool cast are slow, on 2 threads)."""
    bits = _BITS.get(dtype)
    threshold = round(keep * _U16)
    if device.type != "cpu" or bits is None or threshold >= _U16:
        return keep_mask(shape, keep, device).to(dtype).mul_(1.0 / keep)
    pattern = _scale_bits(keep, dtype)
    kept = _uniform_keep(math.prod(shape), threshold)
    m = np.multiply(kept, pattern, dtype=bits[0])  # the pattern where kept, else 0 (+0.0's bits)
    return torch.from_numpy(m).view(dtype).view(shape)


@functools.lru_cache(maxsize=64)
def _scale_bits(keep: float, dtype: torch.dtype) -> np.integer:
    """The bits of ``1 / keep`` rounded to ``dtype`` as torch's ``mul_`` rounds it, as the
    numpy integer of ``_BITS[dtype]`` (a positive float's bits: a positive integer)."""
    np_int, torch_int = _BITS[dtype]
    return np_int(torch.ones((), dtype=dtype).mul_(1.0 / keep).view(torch_int).item())
