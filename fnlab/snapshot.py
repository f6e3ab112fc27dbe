"""Snapshots of a notebook's variables: saved in its kernel, loaded without running its code.

Grading (see :mod:`fnlab.classroom`) runs a submission in one sandbox and checks
it in another. :func:`save` runs *inside the submission's kernel*: it pickles
each variable with dill into a snapshot folder (content-addressed, so a value
that did not change between two snapshots is stored once). :func:`load` runs in
the checking step and rebuilds the variables with :class:`SafeUnpickler`, which
never calls the submission's code while loading:

- a class the submission defined cannot be rebuilt (so no object whose ``==``
  or ``-`` lies about its value);
- a pickle may call only the rebuild functions of numpy, pandas, torch and
  dill listed in :data:`SAFE_CALLS`, and construct classes of the packages in
  :data:`SAFE_PACKAGES` (:data:`UNSAFE_CLASSES` excepted); anything else it asks
  to call (``os.system``, a function the submission defined, ``exec``) stops
  that variable from loading;
- it cannot change objects it did not build (a module's attributes, a class, a
  registry dict of a trusted module).

Functions the submission defined are rebuilt (their code is data until called),
so a test that calls one, or uses an object holding one (a model's hook), still
runs the submission's code: that is how otter checks a function.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> save({"x": 0.92, "ys": [1, 2]}, folder, ["end"])
>>> env, problems = load(folder, "end", ["x", "ys"])
>>> env["x"], env["ys"], problems
(0.92, [1, 2], {})
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import io
import json
import pickle
import re
import types
from pathlib import Path

#: Snapshot label of the notebook's final state.
END = "__end__"
#: Labels and variable names a snapshot accepts (file names are built from labels).
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Names never saved: IPython's own, and anything private.
_SKIP = {"In", "Out", "get_ipython", "exit", "quit", "open"}

#: Packages whose classes a snapshot may construct.
SAFE_PACKAGES = frozenset({
    "numpy", "pandas", "torch", "torchvision", "fnlab", "sklearn", "scipy",
    "collections", "datetime", "pathlib", "decimal", "fractions", "uuid",
})
#: Parts of those packages whose classes read files, unpickle, compile or start processes.
UNSAFE_CLASSES = re.compile(
    r"(^|\.)(_?dynamo|_?inductor|_?export|fx|jit|package|hub|onnx|compiler|multiprocessing|distributed"
    r"|cpp_extension|library|serialization|io|npyio|_npyio_impl|memmap|pytables|HDFStore"
    r"|utils\.data|DataLoader)(\.|$)")
#: Built-in types a snapshot may construct.
SAFE_BUILTINS = frozenset({
    object, int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set,
    frozenset, slice, range, type(None), type(Ellipsis), type(NotImplemented),
})
#: The only functions a snapshot may call while it loads: ``(module, name)``.
SAFE_CALLS = frozenset({
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("pandas._libs.internals", "_unpickle_block"), ("pandas.core.internals.blocks", "new_block"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
    ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
    ("pandas._libs.tslibs.nattype", "__nat_unpickle"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.storage", "_load_from_bytes"),  # replaced: see SafeUnpickler._replacements
    ("dill._dill", "_create_function"), ("dill._dill", "_create_code"), ("dill._dill", "_create_cell"),
    ("dill._dill", "_load_type"), ("dill._dill", "_create_array"), ("dill._dill", "_create_dtypemeta"),
    ("dill._dill", "_import_module"), ("dill._dill", "_get_attr"), ("dill._dill", "_eval_repr"),
})


# --------------------------------------------------------------------------- saving


def save(namespace: dict, folder: str | Path, labels: list[str]) -> None:
    """Save the variables of ``namespace`` as snapshot(s) ``labels`` in ``folder``.

    Called inside the submission's kernel (``save(globals(), ...)``). Modules are
    recorded by name; private names, IPython's own and values dill cannot pickle
    are left out (listed under ``"skipped"``).
    """
    import dill

    folder = Path(folder)
    (folder / "objects").mkdir(parents=True, exist_ok=True)
    index: dict = {"values": {}, "modules": {}, "skipped": {}}
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in _SKIP or not _LABEL.match(name):
            continue
        if isinstance(value, types.ModuleType):
            index["modules"][name] = value.__name__
            continue
        if type(value).__module__.split(".")[0] in {"IPython", "ipykernel"}:
            continue
        try:
            data = dill.dumps(value, protocol=4)
        except Exception as exc:  # noqa: BLE001 - some values do not pickle; say which
            index["skipped"][name] = f"cannot be saved ({type(exc).__name__})"
            continue
        key = hashlib.sha256(data).hexdigest()
        path = folder / "objects" / key
        if not path.exists():
            path.write_bytes(data)
        index["values"][name] = key
    text = json.dumps(index)
    for label in labels:
        if _LABEL.match(label):
            (folder / f"{label}.json").write_text(text)


def labels(folder: str | Path) -> list[str]:
    """Snapshot labels present in ``folder``."""
    return sorted(p.stem for p in Path(folder).glob("*.json") if _LABEL.match(p.stem))


# --------------------------------------------------------------------------- loading


class UnsafePickle(pickle.UnpicklingError):
    """A snapshot asked for something :class:`SafeUnpickler` does not allow."""


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def safe_class(cls) -> bool:
    """Whether a snapshot may construct ``cls`` (see :data:`SAFE_PACKAGES`)."""
    if not isinstance(cls, type):
        return False
    if cls in SAFE_BUILTINS:
        return True
    module = getattr(cls, "__module__", "") or ""
    return module.split(".")[0] in SAFE_PACKAGES and not UNSAFE_CLASSES.search(_qualified(cls))


def _load_from_bytes(b: bytes):
    """torch's storage loader, with ``weights_only=True`` (torch's own calls ``torch.load``
    with ``weights_only=False``, which would unpickle anything)."""
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


def _eval_repr(text: str):
    """dill's ``_eval_repr`` (an ``eval``), for the only two values dill saves that way."""
    constants = {"Ellipsis": Ellipsis, "NotImplemented": NotImplemented}
    if text not in constants:
        raise UnsafePickle(f"refused to evaluate {str(text)[:50]!r}")
    return constants[text]


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked
    """Unpickle a dill snapshot without calling anything but :data:`SAFE_CALLS` and safe classes.

    ``main`` is the dict that stands for the notebook's ``__main__`` namespace
    (functions the submission defined get it as their globals).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, main: dict):
        super().__init__(file)
        self._main = main
        self._foreign: set[int] = {id(main)}  # objects this load did not build: never mutated
        self._keep: list = []  # keeps foreign objects alive so their ids stay unique
        self._calls: dict[int, object] = {}

    # -- what GLOBAL may fetch
    def find_class(self, module: str, name: str):
        if (module, name) == ("__builtin__", "__main__"):
            return self._main
        if (module, name) == ("__builtin__", "NoneType"):
            return type(None)
        module = {"__builtin__": "builtins", "dill.dill": "dill._dill"}.get(module, module)
        if not _MODULE.match(module) or "." in name or (
                name.startswith("__") and (module, name) not in SAFE_CALLS):
            raise UnsafePickle(f"refused to look up {module}.{name}")
        if module == "torch.storage" and name == "_load_from_bytes":
            obj = _load_from_bytes
        elif module == "dill._dill" and name == "_import_module":
            obj = self._import_module
        elif module == "dill._dill" and name == "_get_attr":
            obj = self._get_attr
        elif module == "dill._dill" and name == "_create_array":
            obj = self._create_array
        elif module == "dill._dill" and name == "_eval_repr":
            obj = _eval_repr
        else:
            try:
                obj = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise UnsafePickle(f"cannot find {module}.{name} ({exc})") from None
        if (module, name) in SAFE_CALLS:
            self._calls[id(obj)] = obj
        return self._mark(obj)

    def _mark(self, obj):
        self._foreign.add(id(obj))
        self._keep.append(obj)
        return obj

    def _import_module(self, name, safe=False):
        if not isinstance(name, str) or not _MODULE.match(name):
            raise UnsafePickle(f"refused to import {name!r}")
        try:
            return self._mark(importlib.import_module(name))
        except ImportError:
            if safe:
                return None
            raise

    def _get_attr(self, obj, name):
        if not isinstance(obj, types.ModuleType) or not isinstance(name, str) or name.startswith("_"):
            raise UnsafePickle(f"refused to get attribute {name!r}")
        return self._mark(getattr(obj, name))

    def _create_array(self, f, args, state, npdict=None):
        self._check_call(f)
        array = f(*args)
        array.__setstate__(state)
        if npdict is not None:
            array.__dict__.update(npdict)
        return array

    # -- what may be called
    def _check_call(self, func, args=()):
        if id(func) in self._calls and self._calls[id(func)] is func:
            if getattr(func, "__module__", "") == "copyreg":
                for cls in args[:2] if func.__name__ == "_reconstructor" else args[:1]:
                    if not safe_class(cls):
                        raise UnsafePickle(f"refused to build a {_qualified(cls)}")
            return
        if safe_class(func):
            return
        raise UnsafePickle(f"refused to call {_qualified(func)}")

    def _check_mutable(self, obj):
        if id(obj) in self._foreign or isinstance(obj, (type, types.ModuleType)):
            raise UnsafePickle(f"refused to change {_qualified(obj)}")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        self._check_call(func, args if isinstance(args, tuple) else ())
        stack[-1] = func(*args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not safe_class(cls):
            raise UnsafePickle(f"refused to build a {_qualified(cls)}")
        self.append(cls.__new__(cls, *args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not safe_class(cls):
            raise UnsafePickle(f"refused to build a {_qualified(cls)}")
        self.append(cls.__new__(cls, *args, **kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _refuse_old_instances(self):
        raise UnsafePickle("refused a protocol-0 instance")
    dispatch[pickle.INST[0]] = _refuse_old_instances
    dispatch[pickle.OBJ[0]] = _refuse_old_instances

    def load_build(self):
        self._check_mutable(self.stack[-2])
        super().load_build()
    dispatch[pickle.BUILD[0]] = load_build

    def load_setitem(self):
        self._check_mutable(self.stack[-3])
        super().load_setitem()
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._check_mutable(self.metastack[-1][-1])
        super().load_setitems()
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_append(self):
        self._check_mutable(self.stack[-2])
        super().load_append()
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        self._check_mutable(self.metastack[-1][-1])
        super().load_appends()
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_additems(self):
        self._check_mutable(self.metastack[-1][-1])
        super().load_additems()
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def persistent_load(self, pid):
        raise UnsafePickle("refused a persistent id")


def _names_used(func: types.FunctionType) -> set[str]:
    """Global names a function's code (and its nested code) refers to."""
    names, todo = set(), [func.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def load(folder: str | Path, label: str, names: list[str] | set[str] | None = None,
         ) -> tuple[dict, dict[str, str]]:
    """Rebuild snapshot ``label`` of ``folder``: ``(namespace, problems)``.

    ``names``: the variables wanted (default all); functions the submission
    defined bring the globals they use. ``problems`` maps a name the snapshot
    holds but that could not be rebuilt to why (not saved, refused by
    :class:`SafeUnpickler`, broken); a name it does not hold is simply absent.
    Nothing of the submission runs while loading.
    """
    folder = Path(folder)
    if not _LABEL.match(label):
        raise ValueError(f"bad snapshot label {label!r}")
    index = json.loads((folder / f"{label}.json").read_text())
    values, modules = dict(index.get("values", {})), dict(index.get("modules", {}))
    skipped = dict(index.get("skipped", {}))
    main = types.ModuleType("__main__").__dict__
    main["__builtins__"] = builtins
    problems: dict[str, str] = {}
    todo = list(dict.fromkeys(names if names is not None else [*modules, *values]))
    done: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in done or name in main:
            continue
        done.add(name)
        if name in modules:
            module = modules[name]
            try:
                if not isinstance(module, str) or not _MODULE.match(module):
                    raise ImportError(module)
                main[name] = importlib.import_module(module)
            except ImportError:
                problems[name] = f"module {module!r} is not installed"
        elif name in values:
            key = str(values[name])
            if not re.fullmatch(r"[0-9a-f]{64}", key):
                problems[name] = "bad snapshot entry"
                continue
            try:
                with open(folder / "objects" / key, "rb") as f:
                    value = SafeUnpickler(f, main).load()
            except UnsafePickle as exc:
                problems[name] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a broken value must not stop the others
                problems[name] = f"cannot be loaded ({type(exc).__name__}: {exc})"[:300]
                continue
            main[name] = value
            if isinstance(value, types.FunctionType) and value.__globals__ is main:
                todo += sorted(_names_used(value) - done)
        elif name in skipped:
            problems[name] = str(skipped[name])
    return main, problems


def identifiers(text: str) -> set[str]:
    """Every identifier in a piece of Python (doctest prompts allowed): the names a test may use.

    >>> sorted(identifiers(">>> assert abs(x.mean() - 1e-9) < tol"))
    ['abs', 'assert', 'tol', 'x']
    """
    return set(re.findall(r"(?<![A-Za-z0-9_.])[A-Za-z_][A-Za-z0-9_]*", text))
