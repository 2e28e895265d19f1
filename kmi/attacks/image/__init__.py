"""Model inversion of image classifiers: recover what each class looks like.

Every attack here is a scikit-learn estimator with the same shape:

- ``Attack(target, *, ...)`` stores its parameters;
- ``fit(X=None)`` validates the target and learns from auxiliary (public) images
  when the attack uses them (a mean image, a GAN prior, an inversion network);
- ``invert(y)`` returns one image per requested label, shape (n, height, width,
  channels), values in the data's ``pixel_range`` (read from the images given to
  ``fit``, or [0, 1]; the search itself runs in [0, 1], :mod:`._pixels`); every
  requested class is optimised at once, in one batch
  (:func:`kmi.attacks._optim.minimize`), never in a Python loop over classes;
- ``score(X, y)``: success against the private images ``X`` of classes ``y`` an
  auditor holds: top-1 accuracy of ``eval_model`` (an independent evaluation
  classifier, :func:`kmi.models.evaluation_classifier`) on ``invert(unique(y))``,
  or, without one, the fraction of reconstructions whose nearest private image
  (in pixels) is of the attacked class.

Labels are those of the target (its output columns, :attr:`Target.classes_`).
"""

from kmi.attacks.image._brepmi import BREPMI
from kmi.attacks.image._deep_inversion import DeepInversion
from kmi.attacks.image._gmi import GMI
from kmi.attacks.image._inversion_model import InversionModel
from kmi.attacks.image._kedmi import KEDMI
from kmi.attacks.image._lokt import LOKT
from kmi.attacks.image._miface import MIFace
from kmi.attacks.image._pixels import in_unit_range, pixel_range_of
from kmi.attacks.image._plgmi import PLGMI
from kmi.attacks.image._purify import purified
from kmi.attacks.image._rlbmi import RLBMI
from kmi.attacks.image._selection import select_candidates
from kmi.attacks.image._untrap import recover_triggers, untrapped

__all__ = [
    "BREPMI",
    "GMI",
    "KEDMI",
    "LOKT",
    "DeepInversion",
    "InversionModel",
    "MIFace",
    "PLGMI",
    "RLBMI",
    "in_unit_range",
    "pixel_range_of",
    "purified",
    "recover_triggers",
    "select_candidates",
    "untrapped",
]
