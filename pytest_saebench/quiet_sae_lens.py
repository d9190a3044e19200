"""sae_lens, imported without the DeprecationWarning its import raises about a
transformer_lens module it uses: users of this plugin cannot act on it."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from sae_lens import SAE
    from sae_lens.registry import SAE_CLASS_REGISTRY
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.tokenization_and_batching import concat_and_batch_sequences

__all__ = ["SAE", "SAE_CLASS_REGISTRY", "SAEMetadata", "concat_and_batch_sequences"]
