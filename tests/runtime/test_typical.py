"""TGI's `typical_p` as npuctl's logits processor applies it: the same tokens kept as transformers'
TypicalLogitsWarper keeps (the reference TGI runs), on the distribution the sampler draws from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TypicalLogitsWarper

from npuctl.runtime.penalties import Penalties


@pytest.mark.parametrize(("mass", "temperature"), [(0.95, 1.0), (0.5, 0.8), (0.2, 1.5), (0.999, 0.3)])
def test_typical_p_keeps_the_tokens_transformers_keeps(mass: float, temperature: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = (rng.standard_normal(400) * 3).astype(np.float32)
        ours = logits.copy()
        Penalties(typical_p=mass, temperature=temperature).apply(ours, [], [])
        scores = TemperatureLogitsWarper(temperature)(None, torch.from_numpy(logits.copy())[None])  # type: ignore[arg-type]
        theirs = TypicalLogitsWarper(mass)(None, scores)[0].numpy()  # type: ignore[arg-type]
        kept = np.isfinite(ours)
        assert kept.any() and not kept.all()
        np.testing.assert_array_equal(kept, np.isfinite(theirs))
        np.testing.assert_array_equal(ours[kept], logits[kept])  # the kept logits are untouched


def test_typical_p_of_one_changes_nothing() -> None:
    assert not Penalties(typical_p=1.0).active and Penalties(typical_p=0.9).active
