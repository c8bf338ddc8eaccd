"""matdiff: symbolic matrix-differential calculus, from Python.

Write a forward pass as matrix expressions; ``derive`` returns one answer per
query, typeset in a notebook, checked against finite differences on request,
and turned into a NumPy, JAX or PyTorch function::

    import matdiff
    answers = matdiff.derive('''
        X: N x d; w: d; y: N
        p = sigmoid(X w)
        L = -(y^T log(p) + (1 - y)^T log(1 - p))
        grad(L, w)
    ''')
    g = answers[-1]
    g.text        # 'Xᵀ (p - y)'
    g.check()     # largest relative error against finite differences
    grad = g.torch()   # def grad_L_w(X, w, y): ...

The engine is Rust (``matdiff._core``); this module gives its answers a
Python face.
"""

from __future__ import annotations

import itertools
import json
import linecache
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _core
from ._core import MatdiffError

__all__ = ["derive", "Answer", "Program", "Step", "MatdiffError", "BACKENDS", "TOLERANCE"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("matdiff")
except Exception:  # pragma: no cover - not installed as a distribution
    __version__ = "0.0.0"

#: The code generators: ``answer.code(backend)`` and the methods of these names.
BACKENDS = ("numpy", "jax", "torch")

_LAYOUTS = ("denominator", "numerator")
_VECS = ("row", "col")

Dim = Union[int, str]
Shape = Tuple[Dim, Dim]


def derive(script: str, layout: str = "denominator", vec: str = "row", steps: bool = False) -> List["Answer"]:
    """Runs a matdiff script and returns the answers to its queries, in order.

    ``layout`` (``"denominator"`` or ``"numerator"``) and ``vec`` (``"row"``
    or ``"col"``) are the conventions of the command line's ``--layout`` and
    ``--vec``; ``steps=True`` keeps each derivation step by step, as
    ``--steps`` prints it. A query ``∂L/∂(W1, b1, …)`` answers with a
    :class:`Program` (its gradients in ``.gradients``); every other query with
    an :class:`Answer`.

    Raises :class:`MatdiffError` for a script matdiff cannot answer, with the
    line, the column and the offending text.
    """
    if not isinstance(script, str):
        raise TypeError(f"script must be a str, not {type(script).__name__}")
    if layout not in _LAYOUTS:
        raise ValueError(f'layout must be "denominator" or "numerator", not {layout!r}')
    if vec not in _VECS:
        raise ValueError(f'vec must be "row" or "col", not {vec!r}')
    source = _Source(script, layout, vec)
    out: List[Answer] = []
    for index, item in enumerate(_core.derive(script, layout, vec, bool(steps))):
        obj = json.loads(item["json"])
        display = _Display(item["text"], item["ascii"], item["latex"])
        where = (item["line"], item["column"])
        if item["kind"] == "program":
            out.append(Program(source, index, obj, display, where))
        else:
            out.append(Answer(source, index, None, obj, display, where))
    return out


class _Source:
    """A script and its conventions, with the code and checks asked of it."""

    def __init__(self, script: str, layout: str, vec: str) -> None:
        self.script = script
        self.layout = layout
        self.vec = vec
        self._lock = threading.Lock()
        self._code: Dict[Tuple[int, str, Optional[int]], str] = {}
        self._checks: Dict[Tuple[int, Optional[int]], Optional[float]] = {}

    def code(self, index: int, backend: str, gradient: Optional[int]) -> str:
        key = (index, backend, gradient)
        with self._lock:
            if key in self._code:
                return self._code[key]
        text = _core.code(self.script, index, backend, self.layout, self.vec, gradient)
        with self._lock:
            self._code[key] = text
        return text

    def check(self, index: int, gradient: Optional[int]) -> Optional[float]:
        key = (index, gradient)
        with self._lock:
            if key in self._checks:
                return self._checks[key]
        err = _core.check(self.script, index, gradient, self.layout, self.vec)
        with self._lock:
            self._checks[key] = err
        return err


class _Display:
    def __init__(self, text: str, ascii: str, latex: str) -> None:
        self.text = text
        self.ascii = ascii
        self.latex = latex


def _shape(pair: Any) -> Shape:
    return tuple(int(d) if str(d).isdigit() else str(d) for d in pair)  # type: ignore[return-value]


class Step:
    """One line of a derivation: ``lhs = rhs`` (``line`` is the whole line,
    with the chain-rule formula and the reshape it comes from; ``rules`` the
    rules it used, as text, e.g. ``["product rule", "d(Xᵀ) = (dX)ᵀ"]``)."""

    __slots__ = ("lhs", "text", "ascii", "latex", "lhs_ascii", "lhs_latex", "line", "rules")

    def __init__(self, obj: Dict[str, Any]) -> None:
        self.lhs: str = obj["lhs"]
        self.lhs_ascii: str = obj["lhs_ascii"]
        self.lhs_latex: str = obj["lhs_latex"]
        self.text: str = obj["text"]
        self.ascii: str = obj["ascii"]
        self.latex: str = obj["latex"]
        self.line: str = obj["line"]
        self.rules: List[str] = [r["text"] for r in obj.get("rules", [])]

    def __str__(self) -> str:
        return self.line

    def __repr__(self) -> str:
        return f"<matdiff.Step {self.line}>"

    def _repr_latex_(self) -> str:
        return f"$${self.lhs_latex} = {self.latex}$$"


_counter = itertools.count(1)


def _load(source: str, backend: str, label: str, entry: Optional[str]) -> Callable[..., Any]:
    """Executes generated code in a fresh module and returns its function."""
    name = f"matdiff_generated_{backend}_{next(_counter)}"
    filename = f"<matdiff {backend}: {label}>"
    module = types.ModuleType(name)
    module.__file__ = filename
    # Tracebacks and inspect.getsource show the generated lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)
    functions = [
        v
        for k, v in module.__dict__.items()
        if isinstance(v, types.FunctionType) and not k.startswith("_") and v.__module__ == name
    ]
    if entry is not None:
        functions = [f for f in functions if f.__name__ == entry] or functions
    if len(functions) != 1:  # pragma: no cover - the generators write one public function
        raise RuntimeError(f"expected one function in the generated {backend} code, found {len(functions)}")
    fn = functions[0]
    fn.__matdiff_source__ = source  # type: ignore[attr-defined]
    return fn


class Answer:
    """The answer to one query.

    ``query`` is its left-hand side (``∂L/∂W1``), ``text``, ``ascii`` and
    ``latex`` its right-hand side in each notation, ``shape`` its shape
    (numbers as ``int``, symbolic sizes as ``str``). ``str(answer)`` is the
    whole display, named adjoints (``δd2 = …``) and steps included.
    """

    def __init__(
        self,
        source: _Source,
        index: int,
        gradient: Optional[int],
        obj: Dict[str, Any],
        display: _Display,
        where: Tuple[int, int],
    ) -> None:
        self._source = source
        self._index = index
        self._gradient = gradient
        self._json = obj
        self._display = display
        self.line, self.column = where
        self.query: str = obj["query"]
        self.text: str = obj["text"]
        self.ascii: str = obj["ascii"]
        self.latex: str = obj["latex"]
        self.shape: Shape = _shape(obj["shape"])
        self.layout: str = obj["layout"]
        self.vec: str = obj["vec"]
        self.steps: List[Step] = [Step(s) for s in obj.get("steps", [])]
        #: Named adjoints the answer uses, each ``(name, text)``.
        self.adjoints: List[Tuple[str, str]] = [(a["name"], a["text"]) for a in obj.get("adjoints", [])]

    # Notations -----------------------------------------------------------

    def __str__(self) -> str:
        return self._display.text

    def __repr__(self) -> str:
        return f"<matdiff.Answer {self._display.text.splitlines()[-1]}>"

    def _repr_latex_(self) -> str:
        return _math(self._display.latex)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self._display.text)

    def display(self, format: str = "text") -> str:
        """The whole display in ``"text"`` (Unicode), ``"ascii"`` or ``"latex"``."""
        try:
            return getattr(self._display, format)
        except AttributeError:
            raise ValueError(f'format must be "text", "ascii" or "latex", not {format!r}') from None

    def to_json(self) -> Dict[str, Any]:
        """The answer as ``--format json`` writes it (a new dict)."""
        return json.loads(json.dumps(self._json))

    # Checking --------------------------------------------------------------

    def check(self) -> Optional[float]:
        """The largest relative error against central finite differences at
        random values; for a bare expression or ``simplify(…)``, against the
        script evaluated as written (``None`` for ``shape(…)``). An answer
        passes when it is at most ``matdiff.TOLERANCE``."""
        return self._source.check(self._index, self._gradient)

    # Code -------------------------------------------------------------------

    def code(self, backend: str = "numpy") -> str:
        """The Python module the command line's ``--format BACKEND`` writes
        for this answer alone."""
        if backend not in BACKENDS:
            raise ValueError(f'backend must be "numpy", "jax" or "torch", not {backend!r}')
        return self._source.code(self._index, backend, self._gradient)

    def function(self, backend: str = "numpy") -> Callable[..., Any]:
        """The generated function, executed in a fresh module: its parameters
        are the declared matrices the answer depends on, in alphabetical
        order, then for each declared function ``f`` used, ``f`` and
        ``f_prime``; sizes no parameter carries are keyword arguments."""
        return _load(self.code(backend), backend, self.query, None)

    def numpy(self) -> Callable[..., Any]:
        """The answer as a NumPy function (see :meth:`function`)."""
        return self.function("numpy")

    def jax(self) -> Callable[..., Any]:
        """The answer as a ``jax.numpy`` function; it can be ``jax.jit``-ed
        (bind function arguments such as ``f1`` with ``functools.partial``)."""
        return self.function("jax")

    def torch(self) -> Callable[..., Any]:
        """The answer as a PyTorch function, for any device and dtype."""
        return self.function("torch")


class Program(Answer):
    """The answer to ``∂L/∂(X, Y, …)``: one backward pass for several
    gradients. ``gradients`` holds each as an :class:`Answer` (with a
    function of its own, ``grad_L_X``); the program's generated function is
    ``value_and_grad_L``, returning ``(L, (∂L/∂X, ∂L/∂Y, …))``.
    ``shape`` is the tuple of the gradients' shapes; ``text``, ``ascii`` and
    ``latex`` the whole program, one line per adjoint and gradient."""

    def __init__(
        self, source: _Source, index: int, obj: Dict[str, Any], display: _Display, where: Tuple[int, int]
    ) -> None:
        self._source = source
        self._index = index
        self._gradient = None
        self._json = obj
        self._display = display
        self.line, self.column = where
        self.query = obj["query"]
        self.layout = obj["layout"]
        self.vec = obj["vec"]
        self.adjoints = [(a["name"], a["text"]) for a in obj.get("adjoints", [])]
        self.gradients: List[Answer] = []
        for i, g in enumerate(obj["gradients"]):
            shown = _Display(f"{g['query']} = {g['text']}", f"{g['query']} = {g['ascii']}", g["latex"])
            self.gradients.append(Answer(source, index, i, g, shown, where))
        self.shape = tuple(g.shape for g in self.gradients)  # type: ignore[assignment]
        self.steps = [s for g in self.gradients for s in g.steps]
        self.text = display.text
        self.ascii = display.ascii
        self.latex = display.latex

    def __repr__(self) -> str:
        return f"<matdiff.Program {self.query}: {len(self.gradients)} gradients>"

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.gradients)

    def __len__(self) -> int:
        return len(self.gradients)

    def __getitem__(self, i: int) -> Answer:
        return self.gradients[i]


def _math(latex: str) -> str:
    """A display of one or more LaTeX lines (``lhs = rhs``, or an
    ``aligned`` block of steps) as one display-math block."""
    rows: List[str] = []
    for block in _blocks(latex):
        if block.startswith("\\begin{aligned}"):
            inner = block[len("\\begin{aligned}") : -len("\\end{aligned}")].strip()
            rows.extend(r.strip() for r in inner.split("\\\\\n"))
        elif " = " in block:
            rows.append(block.replace(" = ", " &= ", 1))
        else:
            rows.append(block)
    if len(rows) == 1:
        return f"$${rows[0].replace(' &= ', ' = ', 1)}$$"
    return "$$\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}$$"


def _blocks(latex: str) -> List[str]:
    """Splits rendered LaTeX into lines, keeping each ``aligned`` block whole."""
    blocks: List[str] = []
    current: Optional[List[str]] = None
    for line in latex.splitlines():
        if current is not None:
            current.append(line)
            if line.startswith("\\end{aligned}"):
                blocks.append("\n".join(current))
                current = None
        elif line.startswith("\\begin{aligned}"):
            current = [line]
        elif line.strip():
            blocks.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


TOLERANCE: float = _core.TOLERANCE
