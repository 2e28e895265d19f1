"""Result selection: which of an attack's candidate images to return.

An attack that keeps several candidates per label (GMI's restarts, KEDMI's draws
from its learned distributions) returns the best of them by a rule:

- ``"loss"``: the target's log-probability of the label on the image itself, the
  rule of the GMI and KED-MI papers;
- ``"robust"``: the target's mean probability of the label over random
  resized crops of the image, the result selection of Plug & Play Attacks
  (Struppek et al. 2022). A candidate that only fools the target at one exact
  framing (an adversarial pattern rather than the class's features) loses its
  confidence when cropped, so the robust rule ranks it lower.

:func:`select_candidates` applies either rule to any candidates; the attacks call it
with their ``selection`` parameter.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from keras import ops
from sklearn.utils import check_random_state

#: The rules :func:`select_candidates` knows (an attack's ``selection`` parameter).
SELECTIONS = ("loss", "robust")

SELECTION_DOC = """\
selection : {"loss", "robust"}, default="loss"
    How the returned image is chosen among the candidates
    (:func:`kmi.attacks.image.select_candidates`): the highest log-probability of
    the label (the paper's rule), or the highest mean probability over 16 random
    resized crops (Plug & Play Attacks' result selection; 16 queries more per
    candidate)."""


def select_candidates(
    target,
    images,
    labels,
    n_keep: int = 1,
    *,
    selection: str = "robust",
    n_augmentations: int = 16,
    crop_scale: tuple[float, float] = (0.5, 0.9),
    crop_ratio: tuple[float, float] = (0.8, 1.25),
    flip: bool = False,
    random_state=None,
):
    """Rank each label's candidate images by the target's confidence; keep the best.

    Parameters
    ----------
    target : Target
        Scores the candidates (``target.scores``; every query is counted and the
        target's ``query_budget`` holds).
    images : array of shape (n_labels, n_candidates, height, width, channels)
        The candidates, as the target takes them.
    labels : array of shape (n_labels,)
        Each row's label, as a column index of the target's scores.
    n_keep : int, default=1
        Candidates kept per label (at most ``n_candidates``).
    selection : {"robust", "loss"}, default="robust"
        ``"robust"``: the mean probability of the label over ``n_augmentations``
        random resized crops (Plug & Play Attacks); ``"loss"``: the log-probability
        of the label on the image itself (no augmentation).
    n_augmentations : int, default=16
        Crops per candidate (``"robust"``). The same crops are applied to every
        candidate, so ties are decided by the image, not by luck.
    crop_scale : (float, float), default=(0.5, 0.9)
        Range of the crop's area, as a fraction of the image's (PPA's setting).
    crop_ratio : (float, float), default=(0.8, 1.25)
        Range of the crop's aspect ratio (drawn log-uniformly).
    flip : bool, default=False
        Also flip half of the crops left-right (faces: yes; digits: no).
    random_state : int, RandomState instance or None, default=None
        Seeds the crops.

    Returns
    -------
    index : ndarray of shape (n_labels, n_keep)
        Each label's kept candidates, best first. A candidate the target scores
        as NaN ranks last but still fills a place, so ``n_keep`` are always returned.
    score : ndarray of shape (n_labels, n_candidates)
        Every candidate's score by the rule (higher is better).

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks.image import select_candidates
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0))
    >>> candidates = np.random.default_rng(0).uniform(size=(2, 4, 8, 8, 1))
    >>> index, score = select_candidates(target, candidates, [0, 2], n_keep=2,
    ...                                  random_state=0)
    >>> index.shape, score.shape
    ((2, 2), (2, 4))
    """
    images = np.asarray(images, dtype="float32")
    labels = np.asarray(labels)
    if images.ndim != 5:
        raise ValueError(
            "images must be an array of shape (n_labels, n_candidates, height, width, "
            f"channels). Received: images.shape={images.shape}"
        )
    n, k = images.shape[:2]
    if labels.shape != (n,):
        raise ValueError(
            f"labels must hold one label per row of images ({n}). "
            f"Received: labels.shape={labels.shape}"
        )
    if not isinstance(n_keep, Integral) or not 1 <= n_keep <= k:
        raise ValueError(
            f"n_keep must be an integer from 1 to the number of candidates ({k}). "
            f"Received: n_keep={n_keep!r}"
        )
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}. Received: {selection!r}")
    if not isinstance(n_augmentations, Integral) or n_augmentations < 1:
        raise ValueError(
            f"n_augmentations must be a positive integer. Received: {n_augmentations!r}"
        )
    flat = images.reshape(n * k, *images.shape[2:])
    every = np.arange(n * k)
    columns = np.repeat(labels.astype(int), k)
    if selection == "loss":
        probs = np.asarray(target.scores(flat))[every, columns]
        score = np.log(np.clip(probs, 1e-12, 1.0))
    else:
        rng = check_random_state(random_state)
        m = int(n_augmentations)
        views = [_random_resized_crop(flat, crop_scale, crop_ratio, flip, rng) for _ in range(m)]
        # one query of every view: the budget is checked once, before any is scored
        probs = np.asarray(target.scores(np.concatenate(views)))
        score = probs.reshape(m, n * k, -1)[:, every, columns].mean(axis=0)
    score = score.reshape(n, k)
    ranked = np.where(np.isnan(score), -np.inf, score)
    # a stable sort of the negated scores: ties keep the candidates' order
    index = np.argsort(-ranked, axis=1, kind="stable")[:, :n_keep]
    return index, score


def _random_resized_crop(images, scale, ratio, flip, rng):
    """One random crop (the same for every image), resized back to the image's size."""
    height, width = images.shape[1:3]
    area = rng.uniform(*scale) * height * width
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    h = int(np.clip(round(np.sqrt(area / aspect)), 1, height))
    w = int(np.clip(round(np.sqrt(area * aspect)), 1, width))
    top, left = rng.randint(height - h + 1), rng.randint(width - w + 1)
    crop = images[:, top : top + h, left : left + w]
    out = ops.convert_to_numpy(ops.image.resize(crop, (height, width), interpolation="bilinear"))
    if flip and rng.uniform() < 0.5:
        out = out[:, :, ::-1]
    return out.astype("float32")


def best_candidates(target, images, labels, selection, random_state=None):
    """The best candidate of each label by ``selection``, for the attacks' ``invert``.

    Returns ``(best, identity_loss, score)``: the chosen index per label, shape
    (n_labels,); every candidate's identity loss (the target's cross-entropy of
    the label), shape (n_labels, n_candidates); and its score by the rule (higher
    is better; for ``"loss"``, minus the identity loss). The images are scored
    once on their own, and once per crop for ``"robust"``.
    """
    index, log_p = select_candidates(target, images, labels, selection="loss")
    score = log_p
    if selection != "loss":
        index, score = select_candidates(
            target, images, labels, selection=selection, random_state=random_state
        )
    return index[:, 0], -log_p, score


class RestartsMixin:
    """Keep every restart of a latent search and return the best by ``selection``.

    For the attacks that optimise ``n_restarts`` latent codes per label in one batch
    (GMI, PLG-MI): :meth:`_pick_restarts` scores the restarts' images
    (:func:`best_candidates`), records them all (``restart_latents_``,
    ``restart_losses_``, ``selection_scores_``) and the chosen one (``latents_``,
    ``loss_``), and returns the chosen images.
    """

    def _pick_restarts(self, result, images, idx, random_state):
        """``result``: the :func:`~kmi.attacks._optim.minimize` result over
        ``len(idx) * n_restarts`` codes, label by label; ``images`` their images."""
        n = len(idx)
        r = len(result.x) // n
        best, ident, score = best_candidates(
            self.target_,
            images.reshape(n, r, *images.shape[1:]),
            idx,
            self.selection,
            random_state=random_state.randint(2**31) if self.selection != "loss" else None,
        )
        pick = np.arange(n) * r + best
        self.latents_ = result.x[pick]
        self.loss_ = ident[np.arange(n), best]
        self.restart_latents_ = result.x.reshape(n, r, -1)
        self.restart_losses_ = ident
        self.selection_scores_ = score
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return images[pick]
