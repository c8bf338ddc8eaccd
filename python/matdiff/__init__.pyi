"""Type stubs of matdiff: derive(script) and its answers."""

from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Union

__version__: str
__all__: List[str]

Dim = Union[int, str]
"""A size: a number, or a symbolic size such as ``"n"``."""
Shape = Tuple[Dim, Dim]
Backend = Literal["numpy", "jax", "torch"]

BACKENDS: Tuple[str, str, str]
TOLERANCE: float
"""The largest relative error ``check()`` lets pass."""

class MatdiffError(ValueError):
    """A script matdiff cannot answer: a syntax error, an unknown name, shapes
    that disagree, or an answer that cannot be checked or turned into code."""

    line: int
    """1-based line of the offending text."""
    column: int
    """1-based column of the offending text."""
    text: str
    """The offending text."""
    message: str
    """What is wrong."""
    report: str
    """The line with the offending text underlined, and any suggested fix."""

def derive(
    script: str,
    layout: Literal["denominator", "numerator"] = "denominator",
    vec: Literal["row", "col"] = "row",
    steps: bool = False,
) -> List[Answer]:
    """Runs a matdiff script and returns the answers to its queries, in order;
    ``∂L/∂(X, Y, …)`` answers with a :class:`Program`. Raises
    :class:`MatdiffError` with the line, the column and the offending text."""
    ...

class Step:
    """One line of a derivation."""

    lhs: str
    lhs_ascii: str
    lhs_latex: str
    text: str
    ascii: str
    latex: str
    line: str
    rules: List[str]
    """The rules the line used, e.g. ``["product rule", "d(Xᵀ) = (dX)ᵀ"]``."""
    def _repr_latex_(self) -> str: ...

class Answer:
    """The answer to one query."""

    query: str
    """Its left-hand side, e.g. ``∂L/∂W1``."""
    text: str
    """The right-hand side in Unicode text."""
    ascii: str
    """The right-hand side in ASCII."""
    latex: str
    """The right-hand side in LaTeX."""
    shape: Shape
    layout: str
    vec: str
    steps: List[Step]
    """The derivation step by step (``derive(..., steps=True)``), else empty."""
    adjoints: List[Tuple[str, str]]
    """Named adjoints (``δd2``) the answer uses, each ``(name, text)``."""
    line: int
    column: int
    def _repr_latex_(self) -> str:
        """The answer typeset, as ``$$…$$``, for notebooks."""
        ...
    def display(self, format: Literal["text", "ascii", "latex"] = "text") -> str: ...
    def to_json(self) -> Dict[str, Any]: ...
    def check(self) -> Optional[float]:
        """The largest relative error against finite differences at random
        values (for a bare expression or ``simplify(…)``, against the script
        evaluated as written); ``None`` for ``shape(…)``."""
        ...
    def code(self, backend: Backend = "numpy") -> str:
        """The generated Python module for a backend."""
        ...
    def function(self, backend: Backend = "numpy") -> Callable[..., Any]: ...
    def numpy(self) -> Callable[..., Any]:
        """The answer as a NumPy function of the declared matrices it depends
        on (alphabetical), then ``f, f_prime`` for each declared function."""
        ...
    def jax(self) -> Callable[..., Any]:
        """The answer as a ``jax.numpy`` function; ``jax.jit`` it."""
        ...
    def torch(self) -> Callable[..., Any]:
        """The answer as a PyTorch function, for any device and dtype."""
        ...

class Program(Answer):
    """``∂L/∂(X, Y, …)``: one backward pass; the functions are
    ``value_and_grad_L`` returning ``(L, (∂L/∂X, ∂L/∂Y, …))``. Each of
    ``gradients`` also has functions of its own (``grad_L_X``)."""

    gradients: List[Answer]
    shape: Tuple[Shape, ...]  # type: ignore[assignment]
    def __iter__(self) -> Iterator[Answer]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Answer: ...
