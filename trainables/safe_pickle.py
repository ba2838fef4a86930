"""Read CIFAR's python batches without letting the file run code.

Why: ``pickle.load`` executes whatever callables a file names, and a CIFAR root is a folder
a user can fill (a shared NFS disk, an upload area), so a crafted ``data_batch_1`` would run
code in the Ray worker as the service's user. torchvision's ``cifar-10-batches-py`` /
``cifar-100-python`` files only ever hold a dict of bytes/str keys, lists of ints and bytes,
and one ``uint8`` ndarray, so :class:`RestrictedUnpickler` admits exactly the callables that
rebuild those and refuses every other global before it is imported. Even numpy's own
``ndarray``/``dtype`` are not handed out: stand-ins take their pickled state and rebuild the
array from raw bytes with a plain numeric dtype, so no numpy ``__setstate__`` ever sees
attacker-chosen state and object arrays cannot occur. ``_codecs.encode`` is admitted with
latin-1 only (how protocol-2 files written by Python 3 store bytes). Python's own
``dict``/``list``/``bytes``/``str``/``int`` need no global.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from trainables.errors import ConfigError

__all__ = [
    "RestrictedUnpickler",
    "UnsafePickleError",
    "check_pickle_file",
    "load_cifar_batch",
    "pickle_globals",
]


class UnsafePickleError(ConfigError):
    """A pickle names a callable outside what the data format holds; nothing was run."""

    def __reduce__(self) -> tuple:
        return (type(self), self.args)


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to how pickle protocol 2 stores ``bytes`` (latin-1)."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"_codecs.encode with {encoding!r} is not how bytes are stored")
    return obj.encode("latin-1", errors)


#: Plain numeric element types a data file may use (no objects, no structured records).
_PLAIN_DTYPES = frozenset(
    np.dtype(c).str[1:] for c in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")
)


class _DType:
    """Stands in for ``numpy.dtype(spec)`` while unpickling.

    numpy's own ``dtype.__setstate__`` would accept whatever state tuple the file holds
    (flags included), so the state is reduced to the one thing a plain dtype needs: its
    byte order.
    """

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(spec, str | bytes):
            raise UnsafePickleError(f"dtype {spec!r} is not a plain numeric type")
        spec = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
        if spec.lstrip("<>|=") not in _PLAIN_DTYPES:
            raise UnsafePickleError(f"dtype {spec!r} is not allowed in a data file")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        order = order.decode("ascii", "replace") if isinstance(order, bytes) else order
        if order in ("<", ">") and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)


class _Array:
    """Stands in for ``numpy.ndarray`` while unpickling; rebuilt from raw bytes only."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("malformed ndarray state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType):
            raise UnsafePickleError("ndarray state without a plain dtype")
        if not isinstance(raw, bytes | bytearray):
            raise UnsafePickleError("ndarray data must be raw bytes (no object arrays)")
        self.array = _from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _from_bytes(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise UnsafePickleError("array data without a plain dtype")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise UnsafePickleError(f"bad array shape {shape!r}")
    if int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize != len(raw):
        raise UnsafePickleError("array shape does not match its data")
    order = "F" if order == "F" else "C"
    return np.frombuffer(bytes(raw), dtype=dtype.dtype).reshape(shape, order=order).copy()


def _array_reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> _Array:
    if subtype is not _ARRAY_TYPE:
        raise UnsafePickleError(f"array subtype {subtype!r} is not allowed")
    return _Array()


#: What ``numpy.ndarray`` resolves to inside a data file: a marker, never the real class.
_ARRAY_TYPE = object()

_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _array_reconstruct
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _from_bytes
_ALLOWED[("numpy", "ndarray")] = _ARRAY_TYPE
_ALLOWED[("numpy", "dtype")] = _DType
_ALLOWED[("_codecs", "encode")] = _latin1_encode


def _materialise(obj: Any, depth: int = 0) -> Any:
    """Replace the stand-ins by real arrays (dicts and lists of a batch are shallow)."""
    if depth > 8:
        raise UnsafePickleError("data file is nested too deeply")
    if isinstance(obj, _Array):
        if obj.array is None:
            raise UnsafePickleError("ndarray without data")
        return obj.array
    if isinstance(obj, _DType):
        return obj.dtype
    if isinstance(obj, dict):
        return {k: _materialise(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, depth + 1) for v in obj]
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only knows numpy array reconstruction.

    ``persistent_load`` is left unset (pickle then refuses persistent ids), so the only way
    a file can name a callable is ``find_class``, and that returns our wrappers or raises.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a data file may only hold dicts, lists, "
                "bytes, str, int and numpy arrays"
            ) from None


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                         "BINSTRING", "SHORT_BINSTRING"})
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})


def pickle_globals(path: str | Path) -> list[str]:
    """The ``module.name`` globals a pickle file would look up, read without executing it.

    A static scan (``pickletools.genops``) for the API, which checks a CIFAR root at submit
    time without loading it. ``STACK_GLOBAL`` takes its names from the two values below it;
    when those are not plain strings the scan reports ``"?"``, which no allow-list admits
    (fail closed).
    """
    import pickletools

    found: list[str] = []
    stack: list[str | None] = []  # what the opcodes pushed, strings kept, the rest None
    memo: dict[int, str | None] = {}
    with open(path, "rb") as fh:
        for op, arg, _ in pickletools.genops(fh):
            name = op.name
            if name == "GLOBAL" or name == "INST":
                found.append(".".join(str(arg).split(" ", 1)))
                stack.append(None)
            elif name == "STACK_GLOBAL":
                module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                found.append(f"{module}.{attr}" if module and attr else "?")
                stack.append(None)
            elif name in _STRING_OPS:
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "OBJ" or name == "EXT1" or name == "EXT2" or name == "EXT4":
                found.append("?")  # class from the stack / copyreg registry: not admitted
                stack.append(None)
            elif name not in _NO_PUSH_OPS:
                stack.append(None)
            if len(stack) > 64:
                del stack[:-2]
    return found


def check_pickle_file(path: str | Path) -> None:
    """Raise :class:`UnsafePickleError` if the file names a global outside the allow-list."""
    allowed = {f"{m}.{n}" for m, n in _ALLOWED}
    bad = sorted({g for g in pickle_globals(path) if g not in allowed})
    if bad:
        raise UnsafePickleError(
            f"{Path(path).name} names {', '.join(bad[:5])}: a data file may only hold dicts, "
            "lists, bytes, str, int and numpy arrays"
        )


def load_cifar_batch(path: str | Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch as ``(x (N, 3, 32, 32) uint8, y (N,) int64)``.

    The structure is checked after loading too (a dict with ``b"data"`` of ``N × 3072``
    bytes and ``N`` integer labels), so a file that unpickles to something else is a clear
    :class:`ConfigError`, not an exception deep inside numpy.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        obj = _materialise(RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load())
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path.name}: {exc}") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise ConfigError(f"{path.name} is not a CIFAR python batch: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path.name} holds {type(obj).__name__}, not a CIFAR batch dict")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(label_key, obj.get(label_key.decode()))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise ConfigError(f"{path.name}: b'data' must be an (N, 3072) uint8 array")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise ConfigError(f"{path.name}: {label_key!r} must hold one label per image")
    if isinstance(labels, list) and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise ConfigError(f"{path.name}: {label_key!r} must be integers")
    x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)
