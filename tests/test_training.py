"""Short training runs that catch models which cannot learn (a few epochs, digits)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_mobilenet_s_validates_above_chance_within_a_few_epochs(tmp_path):
    """With Keras' default batch-norm momentum the moving statistics lag far behind on small datasets, validation
    stays at chance and early stopping keeps a useless model: this guards the momentum choice."""
    from edgecnn.train.fit import train

    metrics = train("digits", "mobilenet-s", tmp_path, epochs=4, seed=0, augment=False, patience=4,
                    model_options={"alpha": 0.5}, verbose=0)
    assert metrics["test_accuracy"] > 0.6
