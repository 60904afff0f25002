"""The math of Box-action exploration: diagonal Gaussians, gSDE, and actions scaled to bounds.

Generalised state-dependent exploration (gSDE; Raffin, Kober and Stulp, CoRL 2021) perturbs
the action with a linear function of the policy's last hidden features ``z(s)`` (dimension
``d``):

    a = mu(s) + z(s)^T E,        E_ij ~ N(0, sigma_ij^2),   sigma = exp(log_std)  (d x m)

``E`` is drawn once per env and kept for several steps, so the noise changes smoothly with the
state instead of jumping every step: a car can keep pushing one way long enough to reach a hill
top. Given the state, ``a`` is Gaussian with mean ``mu(s)`` and per-dimension variance
``sum_i z_i(s)^2 sigma_ij^2``; that marginal is what PPO's log-probabilities are taken under.
The features enter the variance detached (as in the paper's default), so the spread is learned
through ``log_std`` only and the exploration does not reshape the features.

Every function here is pure (tensors in, tensors out).
"""

from __future__ import annotations

import math

import numpy as np
import torch

LOG_2PI = math.log(2.0 * math.pi)
GSDE_EPS = 1e-6  # keeps sigma_j(s) > 0 where every feature is 0


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    r"""log N(a; mu, diag(sigma^2)), summed over the last (action) axis.

    .. math::
        \log \pi(a|s) = \sum_j \Big[-\frac{(a_j - \mu_j)^2}{2\sigma_j^2} - \log\sigma_j
        - \tfrac12 \log 2\pi\Big]

    ``std`` broadcasts against ``mean`` (one per dimension, or one per state and dimension).
    """
    z = (actions - mean) / std
    return (-0.5 * z * z - torch.log(std) - 0.5 * LOG_2PI).sum(-1)


def gaussian_entropy(std: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy of diagonal Gaussians, ``H = sum_j (log sigma_j + (1 + log 2 pi) / 2)``.

    ``std`` is ``(..., m)``; the entropy of each leading index is averaged, over ``mask`` (same
    shape as the leading axes) when given.
    """
    h = (torch.log(std) + 0.5 * (1.0 + LOG_2PI)).sum(-1)
    if mask is None:
        return h.mean()
    return (h * mask).sum() / mask.sum().clamp_min(1.0)


def gsde_std(features: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    r"""Per-state standard deviation of gSDE's action noise.

    .. math:: \sigma_j(s) = \sqrt{\textstyle\sum_i z_i(s)^2 \exp(2\ell_{ij}) + \epsilon}

    Args:
        features: ``(..., d)`` the policy's last hidden features ``z(s)``.
        log_std: ``(d, m)`` the learned ``ell = log sigma`` of the noise matrix's entries.

    Returns:
        ``(..., m)``.
    """
    return torch.sqrt((features * features) @ torch.exp(2.0 * log_std) + GSDE_EPS)


def sample_gsde_matrices(
    log_std: torch.Tensor, n: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` noise matrices ``E`` with ``E_ij ~ N(0, exp(ell_ij)^2)``: ``(n, d, m)``."""
    shape = (n, *log_std.shape)
    return torch.randn(shape, generator=generator, dtype=log_std.dtype) * torch.exp(log_std)


def gsde_noise(features: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """The action noise ``eps_k = z(s_k)^T E_k`` of each row ``k``.

    Shapes: ``features`` ``(n, d)``, ``matrices`` ``(n, d, m)``, the result ``(n, m)``.
    """
    return torch.einsum("nd,ndm->nm", features, matrices)


def scale_to_bounds(u: np.ndarray, low, high) -> np.ndarray:
    r"""Map actions from ``[-1, 1]`` to the env's ``[low, high]`` per dimension, clipping first.

    .. math:: a = \mathrm{low} + \tfrac12 (\mathrm{clip}(u, -1, 1) + 1)(\mathrm{high} - \mathrm{low})

    ``low``/``high`` broadcast over the batch; the result is clipped to them once more, so that
    rounding never puts an action a hair outside the space.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    a = low + 0.5 * (np.clip(u, -1.0, 1.0) + 1.0) * (high - low)
    return np.clip(a, low, high)
