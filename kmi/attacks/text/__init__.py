"""Model inversion of text models: recover training text, or the text behind an embedding.

- :class:`LMExtraction` (black-box): generate many samples from a language model
  and rank them by how memorised they look (Carlini et al. 2021);
- :class:`TokenOptimization` (white-box): optimise relaxed (Gumbel-softmax) tokens
  through the model's embedding matrix to recover a secret after a known prefix, for
  a known label of a classifier or under a language model (Parikh et al. 2022);
- :class:`EmbeddingInversion` (black-box, learned): train an inverter on embeddings of
  auxiliary texts queried from the target encoder, then turn embeddings back into
  texts: a bag-of-words head (Song and Raghunathan 2020) or a sequence decoder, with
  an optional correction step that re-embeds hypotheses and keeps the closest
  (after vec2text, Morris et al. 2023, at small scale).

Success is measured with :mod:`kmi.metrics.text` (word F1, BLEU, exact match,
exposure): each ``score`` returns one of them, greater is better.
"""

from kmi.attacks.text._embedding_inversion import EmbeddingInversion
from kmi.attacks.text._extraction import LMExtraction
from kmi.attacks.text._token_optimization import TokenOptimization

__all__ = ["EmbeddingInversion", "LMExtraction", "TokenOptimization"]
