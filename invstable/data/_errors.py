"""The error of reading a user's image, in a module of its own: the folder reader and the medical readers both raise
it, and neither imports the other for it."""

from __future__ import annotations


class ImageReadError(ValueError):
    """An image (or an array standing for one) could not be read or converted; names the file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
