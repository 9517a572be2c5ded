"""Differential privacy of a run (``privacy:``): what it leaks, bounded and accounted.

* ``mode: sample`` — **DP-SGD per silo** with Opacus (:mod:`fedsim.privacy.dpsgd`). Every
  gradient step that reads a silo's training data — its own local steps, the visiting models it
  trains (FedEFM's overseas steps, the released rule's copies) and its distillation steps — clips
  each sample's gradient to ``max_grad_norm`` (C) and adds Gaussian noise of std σ·C; the silo's
  Opacus RDP accountant composes every one of those steps, so ε_i bounds what anything that leaves
  silo i reveals about one of its samples (δ = ``delta``).
* ``mode: client`` — **client-level DP** in the DP-FedAvg style (:mod:`fedsim.privacy.client`):
  each silo's round update is clipped to norm ``max_grad_norm`` (S), the server adds Gaussian
  noise of std σ·S to the sum of the participating silos' updates and divides by their number;
  an Opacus RDP accountant (sampling rate 1: every participating silo every round) gives ε for
  one whole silo's data.

σ is ``noise_multiplier``, or Opacus finds it from ``target_epsilon`` (``get_noise_multiplier``)
for the silo that spends the most — once, in the plan, before any rank starts. Everything a user
can get wrong (an algorithm or model that cannot be private, δ ≥ 1/n, a target that cannot be
reached) is one line and exit 2 there (:mod:`fedsim.privacy.plan`). The ``privacy:`` section is
:mod:`fedsim.config.privacy`; the modules of the two modes import Opacus, so a rank imports them
only when its run is private.
"""

from __future__ import annotations

from fedsim.config.privacy import OPACUS_INCOMPATIBLE, PRIVACY_MODES, PrivacyConfig
from fedsim.privacy.base import NoPrivacy
from fedsim.privacy.plan import PrivacyPlan, resolve_privacy


def build_privacy(priv: PrivacyPlan | None, fed):
    """The privacy component of a rank for the run's resolved privacy plan (None: off):
    :class:`NoPrivacy`, DP-SGD or DP-FedAvg."""
    if priv is None:
        return NoPrivacy()
    if priv.mode == "sample":  # Opacus: imported only for a private run
        from fedsim.privacy.dpsgd import SampleDP

        return SampleDP(priv, fed)
    from fedsim.privacy.client import ClientDP

    return ClientDP(priv, fed)


__all__ = ["OPACUS_INCOMPATIBLE", "PRIVACY_MODES", "NoPrivacy", "PrivacyConfig", "PrivacyPlan", "build_privacy",
           "resolve_privacy"]
