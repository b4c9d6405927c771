"""edlm: energy-based diffusion language models.

Notation used throughout the package (see ``docs/method.md``):

- ``B`` batch size, ``L`` sequence length, ``V`` number of real tokens, ``k`` importance-sampling candidates.
- ``mask_id`` the [MASK] token id; for character corpora ``mask_id == V``, so models emit ``V + 1`` logits.
- ``x0`` clean tokens ``(B, L)`` int64; ``x_t`` noised tokens ``(B, L)`` where masked positions hold ``mask_id``.
- ``t`` diffusion time in [0, 1]; ``alpha_t`` the probability that a token is still visible at time ``t``.
- Energies ``E(x0, x_t)``: low energy means more likely; p(x0 | x_t) ∝ mu_theta(x0 | x_t) exp(-E).
"""

__version__ = "0.1.0"
