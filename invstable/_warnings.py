"""Warning categories of invstable, so that a caller filters a warning by its class, never by its text."""

from __future__ import annotations


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped at its iteration cap before reaching its tolerance.

    Raised by the Tikhonov conjugate gradients, :class:`~invstable.models.VariationalInverse` and the power
    iteration behind an operator's norm bound. The result is returned all the same (with what the solver reached
    in its ``SolveInfo`` or report); raise ``max_iter`` or loosen the tolerance to silence it. It is a
    ``RuntimeWarning``, as these warnings were before the class existed, so filters on that category still apply.

    Examples
    --------
    >>> import warnings
    >>> from invstable import ConvergenceWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ConvergenceWarning)  # the capped solves of a sweep
    """
