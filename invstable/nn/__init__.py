"""Stable layers: discretised stable dynamical systems with certified Lipschitz bounds."""
