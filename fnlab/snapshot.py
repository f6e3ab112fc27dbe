"""Snapshots of a notebook's variables: saved in its kernel, loaded as plain data only.

Grading (see :mod:`fnlab.grading`) runs a submission in one sandbox and checks
it in another. :func:`save` runs *inside the submission's kernel*: it pickles
each variable with dill into a snapshot folder (content-addressed, so a value
that did not change between two snapshots is stored once); a function the
notebook defined is recorded under ``"functions"`` (it is code, not a value).
Since the submission writes these files, nothing in them is trusted. :func:`load`
runs in the checking step and rebuilds the variables with :class:`SafeUnpickler`,
which never calls the submission's code:

- a pickle may name only the rebuild functions of numpy, pandas, torch and dill
  listed in :data:`SAFE_CALLS` (each call checked *with its arguments*), classes
  of the packages in :data:`SAFE_PACKAGES` (:data:`UNSAFE_CLASSES` excepted) and
  torch's dtype constants; a function (``os.system``, ``exec``, one the
  submission defined), a module attribute (``unittest.mock.ANY``) or the
  notebook's namespace stops that variable from loading;
- it cannot change objects it did not build (a module's attributes, a class, a
  registry dict of a trusted module);
- what it built must be plain data (:func:`check_plain`): no function, class,
  module or method anywhere inside.

Anything else is "not gradable": the question that uses it scores 0, with a note.
A function the notebook defined is only ever *called*, by
:class:`fnlab.autograde.StudentFunction`, in a process of its own.

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
#: Parts of those packages whose classes read files, unpickle, compile or start processes
#: (and fnlab's own machinery: no course object comes from there).
UNSAFE_CLASSES = re.compile(
    r"(^|\.)(_?dynamo|_?inductor|_?export|fx|jit|package|hub|onnx|compiler|multiprocessing|distributed"
    r"|cpp_extension|library|serialization|io|npyio|_npyio_impl|memmap|pytables|HDFStore"
    r"|utils\.data|DataLoader|ma|mock|testing|cluster|sweep|course|cli|sandbox|autograde|grading"
    r"|classroom)(\.|$)")
#: Built-in types a snapshot may construct.
SAFE_BUILTINS = frozenset({
    object, int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set,
    frozenset, slice, range, type(None), type(Ellipsis), type(NotImplemented),
})
#: The only functions a snapshot may call while it loads: ``(module, name)``. Each call is
#: checked *with its arguments* (:meth:`SafeUnpickler._check_call`): a class it builds must
#: be a safe class, a function it passes on must itself be one of these.
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
    ("torch.storage", "_load_from_bytes"),  # replaced: see SafeUnpickler.find_class
    ("dill._dill", "_load_type"), ("dill._dill", "_create_array"), ("dill._dill", "_create_dtypemeta"),
    ("dill._dill", "_eval_repr"),
})
#: Module roots a snapshot's module entries (``import numpy as np``) may name.
SAFE_MODULES = frozenset({"numpy", "pandas", "torch", "torchvision", "fnlab", "sklearn", "scipy",
                          "math", "statistics", "matplotlib", "seaborn", "collections", "datetime",
                          "pathlib", "dataclasses"})
#: The usual short names of modules (``np`` for numpy): a module entry must use its own last
#: name or one of these.
MODULE_ALIASES = {"np": "numpy", "pd": "pandas", "plt": "matplotlib.pyplot", "sns": "seaborn",
                  "F": "torch.nn.functional", "nn": "torch.nn", "mpl": "matplotlib"}


class NotGradable(ValueError):
    """A value is not plain data (a function, a class, a module, an object holding one)."""


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
    index: dict = {"values": {}, "modules": {}, "functions": {}, "skipped": {}}
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
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            index["functions"][name] = key  # code: never loaded as a value, only called
        else:
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


def _constant(obj) -> bool:
    """Library constants a pickle names by reference (``torch.float32``)."""
    module = type(obj).__module__ or ""
    if module.split(".")[0] != "torch":
        return False
    import torch

    return isinstance(obj, (torch.dtype, torch.layout, torch.memory_format))


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked
    """Unpickle a dill snapshot into plain data, calling nothing but checked :data:`SAFE_CALLS`.

    A pickle may name only the functions of :data:`SAFE_CALLS`, safe classes and a
    few library constants; anything else (a function, ``unittest.mock.ANY``, a
    module's dict, the notebook's namespace) stops the load. Every call is checked
    with its arguments, and objects this load did not build are never changed.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file):
        super().__init__(file)
        self._foreign: set[int] = set()  # objects this load did not build: never mutated
        self._keep: list = []  # keeps foreign objects alive so their ids stay unique
        self._calls: dict[int, tuple[object, tuple[str, str]]] = {}

    # -- what GLOBAL may fetch
    def find_class(self, module: str, name: str):
        if module == "__builtin__" and name == "__main__":
            raise UnsafePickle("refused the notebook's namespace (code the notebook defined)")
        if (module, name) == ("__builtin__", "NoneType"):
            return type(None)
        module = {"__builtin__": "builtins", "dill.dill": "dill._dill"}.get(module, module)
        if not _MODULE.match(module) or "." in name or (
                name.startswith("__") and (module, name) not in SAFE_CALLS):
            raise UnsafePickle(f"refused to look up {module}.{name}")
        replaced = {("torch.storage", "_load_from_bytes"): _load_from_bytes,
                    ("dill._dill", "_create_array"): self._create_array,
                    ("dill._dill", "_eval_repr"): _eval_repr,
                    ("torch._tensor", "_rebuild_from_type_v2"): self._rebuild_from_type_v2}
        if (module, name) in replaced:
            obj = replaced[(module, name)]
        else:
            try:
                obj = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise UnsafePickle(f"cannot find {module}.{name} ({exc})") from None
        if (module, name) in SAFE_CALLS:
            self._calls[id(obj)] = (obj, (module, name))
        elif not (safe_class(obj) or _constant(obj)):
            what = "call" if callable(obj) else "look up"
            raise UnsafePickle(f"refused to {what} {module}.{name}")
        return self._mark(obj)

    def _mark(self, obj):
        self._foreign.add(id(obj))
        self._keep.append(obj)
        return obj

    def _create_array(self, f, args, state, npdict=None):
        if self._call_name(f) not in {("numpy._core.multiarray", "_reconstruct"),
                                      ("numpy.core.multiarray", "_reconstruct")}:
            raise UnsafePickle(f"refused to build an array with {_qualified(f)}")
        if npdict:
            raise UnsafePickle("refused an array with attributes")
        self._check_call(f, args)
        array = f(*args)
        array.__setstate__(state)
        return array

    def _rebuild_from_type_v2(self, func, new_type, args, state):
        import torch
        from torch._tensor import _rebuild_from_type_v2

        if not (safe_class(new_type) and issubclass(new_type, torch.Tensor)):
            raise UnsafePickle(f"refused to build a {_qualified(new_type)}")
        if state:
            raise UnsafePickle("refused a tensor with attributes")
        self._check_call(func, args if isinstance(args, tuple) else ())
        return _rebuild_from_type_v2(func, new_type, args, state)

    # -- what may be called, with which arguments
    def _call_name(self, func) -> tuple[str, str] | None:
        entry = self._calls.get(id(func))
        return entry[1] if entry and entry[0] is func else None

    def _check_call(self, func, args=()):
        name = self._call_name(func)
        if name is None:
            if safe_class(func):
                return
            raise UnsafePickle(f"refused to call {_qualified(func)}")
        if not isinstance(args, tuple):
            raise UnsafePickle(f"refused to call {'.'.join(name)} with {type(args).__name__}")

        def need_class(cls, base=None):
            if not safe_class(cls) or (base is not None and not issubclass(cls, base)):
                raise UnsafePickle(f"refused to build a {_qualified(cls)}")

        module, fname = name
        if name == ("copyreg", "_reconstructor"):
            if len(args) != 3:
                raise UnsafePickle("refused copyreg._reconstructor with odd arguments")
            need_class(args[0])
            need_class(args[1])
        elif module == "copyreg":  # __newobj__(cls, *args), __newobj_ex__(cls, args, kwargs)
            if not args:
                raise UnsafePickle(f"refused copyreg.{fname} with no class")
            need_class(args[0])
        elif fname in ("_reconstruct", "_new_Index", "__pyx_unpickle_NDArrayBacked",
                       "__pyx_unpickle_SeedSequence"):
            if not args:
                raise UnsafePickle(f"refused {module}.{fname} with no class")
            import numpy as np

            need_class(args[0], np.ndarray if fname == "_reconstruct" else None)
        elif fname in ("__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"):
            for arg in args:
                if not (isinstance(arg, str) or safe_class(arg) or type(arg).__module__.startswith(
                        "numpy.random")):
                    raise UnsafePickle(f"refused {module}.{fname} with a {type(arg).__name__}")
        elif fname in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
            hooks = args[5] if fname == "_rebuild_tensor_v2" and len(args) > 5 else (
                args[2] if fname != "_rebuild_tensor_v2" and len(args) > 2 else None)
            if hooks:
                raise UnsafePickle("refused a tensor with backward hooks")
        elif fname == "_create_dtypemeta":
            if args and args[0] is not None:
                need_class(args[0])
        elif fname == "_load_type":
            if not (len(args) == 1 and isinstance(args[0], str)):
                raise UnsafePickle("refused dill._load_type with odd arguments")

    def _check_mutable(self, obj):
        if id(obj) in self._foreign or isinstance(obj, (type, types.ModuleType)):
            raise UnsafePickle(f"refused to change {_qualified(obj)}")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        self._check_call(func, args)
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


# --------------------------------------------------------------------------- plain data

_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, type(Ellipsis),
            type(NotImplemented), range)


def check_plain(value, name: str = "value", limit: int = 1_000_000) -> None:
    """Raise :class:`NotGradable` unless ``value`` is plain data.

    Plain: numbers, strings, bytes, None, containers of plain data, numpy arrays
    (an object array's items plain), torch tensors, pandas objects whose columns,
    index and ``attrs`` are plain, and objects of safe classes (a course
    ``Predictions``, a torch model) whose attributes are plain. Never plain: a
    function, a class, a module, a method, or anything holding one.

    >>> check_plain({"x": [1, 2.5, "a"]})
    >>> check_plain({"f": len})
    Traceback (most recent call last):
    ...
    fnlab.snapshot.NotGradable: value['f'] is a builtin_function_or_method, not plain data
    """
    seen: set[int] = set()
    todo = [(value, name)]
    count = 0
    while todo:
        obj, where = todo.pop()
        if isinstance(obj, _SCALARS) and type(obj) in _SCALARS:
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        count += 1
        if count > limit:
            raise NotGradable(f"{name} holds more than {limit} objects")
        cls = type(obj)
        if isinstance(obj, type) and obj not in SAFE_BUILTINS and safe_class(obj):
            continue  # a library class as a setting (torchvision's ``_norm_layer``)
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                            types.MethodType, types.CodeType, staticmethod, classmethod,
                            property)) or not safe_class(cls):
            kind = "a class" if isinstance(obj, type) else f"a {cls.__name__}"
            raise NotGradable(f"{where} is {kind}, not plain data")
        module = (cls.__module__ or "").split(".")[0]
        if isinstance(obj, slice):
            obj = (obj.start, obj.stop, obj.step)
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo += [(v, f"{where}[{i}]") for i, v in enumerate(obj) if type(v) not in _SCALARS]
            continue
        if isinstance(obj, dict):
            factory = getattr(obj, "default_factory", None)
            if factory is not None and factory not in SAFE_BUILTINS:
                raise NotGradable(f"{where} has a default factory, not plain data")
            for k, v in obj.items():
                if type(k) not in _SCALARS:
                    todo.append((k, f"{where} key"))
                if type(v) not in _SCALARS:
                    todo.append((v, f"{where}[{str(k)[:40]!r}]"))
            continue
        if module == "numpy":
            import numpy as np

            if isinstance(obj, np.ndarray):
                if obj.dtype.hasobject:
                    todo += [(v, f"{where} item") for v in obj.ravel().tolist()
                             if type(v) not in _SCALARS]
                continue
            if isinstance(obj, (np.generic, np.dtype)) or type(obj).__module__.startswith(
                    "numpy.random"):
                continue
        if module == "torch":
            import torch

            if isinstance(obj, torch.Tensor):
                if getattr(obj, "__dict__", None):
                    todo.append((obj.__dict__, f"{where} attributes"))
                continue
            if isinstance(obj, (torch.dtype, torch.device, torch.Size, torch.layout,
                                torch.memory_format)):
                continue
        if module == "pandas":
            import pandas as pd

            if isinstance(obj, pd.DataFrame):
                todo += [(obj[c].to_numpy(dtype=object) if obj[c].dtype == object else None,
                          f"{where}[{c!r}]") for c in obj.columns]
                todo += [(obj.index, f"{where}.index"), (obj.columns, f"{where}.columns"),
                         (dict(obj.attrs), f"{where}.attrs")]
                continue
            if isinstance(obj, pd.Series):
                todo += [(obj.to_numpy(dtype=object) if obj.dtype == object else None, where),
                         (obj.index, f"{where}.index"), (dict(obj.attrs), f"{where}.attrs"),
                         (obj.name, f"{where}.name")]
                continue
            if isinstance(obj, pd.Index):
                if isinstance(obj, pd.MultiIndex):
                    todo += [(level, f"{where}.levels") for level in obj.levels]
                elif obj.dtype == object:
                    todo.append((obj.to_numpy(dtype=object), f"{where}"))
                continue
            if isinstance(obj, pd.api.extensions.ExtensionDtype) or type(obj).__module__.startswith(
                    "pandas._libs"):
                continue
        state = getattr(obj, "__dict__", None)
        if state is not None:
            if any(isinstance(v, dict) and v and "hook" in str(k) for k, v in state.items()):
                raise NotGradable(f"{where} has hooks, not plain data")
            todo.append((dict(state), f"{where}"))
        for base in cls.__mro__:
            slots = base.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    try:
                        todo.append((getattr(obj, slot), f"{where}.{slot}"))
                    except AttributeError:
                        pass


def load_value(data: bytes, name: str = "value"):
    """One pickled value as plain data; :class:`UnsafePickle` or :class:`NotGradable` if not."""
    value = SafeUnpickler(io.BytesIO(data)).load()
    check_plain(value, name)
    return value


def _module_entry(name: str, module) -> str | None:
    """Why a snapshot's module entry ``name -> module`` is refused, or None."""
    if not isinstance(module, str) or not _MODULE.match(module):
        return "bad module entry"
    if module.split(".")[0] not in SAFE_MODULES:
        return f"module {module!r} is not one a test may use"
    if name != module.rsplit(".", 1)[-1] and MODULE_ALIASES.get(name) != module:
        return f"module {module!r} under another name"
    return None


def load(folder: str | Path, label: str, names: list[str] | set[str] | None = None,
         ) -> tuple[dict, dict[str, str]]:
    """Rebuild snapshot ``label`` of ``folder`` as plain data: ``(namespace, problems)``.

    ``names``: the variables wanted (default all). ``problems`` maps a name the
    snapshot holds but that is not gradable to why (not saved, refused by
    :class:`SafeUnpickler`, not plain data per :func:`check_plain`, a function
    the notebook defined); a name it does not hold is simply absent. Modules come
    back only for the packages of :data:`SAFE_MODULES` under their usual names.
    Nothing of the submission runs while loading.
    """
    folder = Path(folder)
    if not _LABEL.match(label):
        raise ValueError(f"bad snapshot label {label!r}")
    index = json.loads((folder / f"{label}.json").read_text())
    if not isinstance(index, dict):
        raise ValueError(f"snapshot {label!r} is not an index")
    sections = {k: index.get(k) if isinstance(index.get(k), dict) else {}
                for k in ("values", "modules", "functions", "skipped")}
    env: dict = {}
    problems: dict[str, str] = {}
    for name in dict.fromkeys(names if names is not None else
                              [*sections["modules"], *sections["values"]]):
        if name in sections["modules"]:
            module = sections["modules"][name]
            why = _module_entry(name, module)
            if why is None:
                try:
                    env[name] = importlib.import_module(module)
                    continue
                except ImportError:
                    why = f"module {module!r} is not installed"
            problems[name] = f"not gradable: {why}"
        elif name in sections["values"]:
            key = str(sections["values"][name])
            if not re.fullmatch(r"[0-9a-f]{64}", key):
                problems[name] = "not gradable: bad snapshot entry"
                continue
            try:
                env[name] = load_value((folder / "objects" / key).read_bytes(), name)
            except (UnsafePickle, NotGradable) as exc:
                problems[name] = f"not gradable: {exc}"[:300]
            except Exception as exc:  # noqa: BLE001 - a broken value must not stop the others
                problems[name] = f"not gradable: cannot be loaded ({type(exc).__name__})"
        elif name in sections["functions"]:
            problems[name] = "not gradable: a function the notebook defined is code, not a value"
        elif name in sections["skipped"]:
            problems[name] = f"not gradable: {str(sections['skipped'][name])[:200]}"
    return env, problems


def function_key(folder: str | Path, label: str, name: str) -> str | None:
    """The object key of function ``name`` the notebook defined, in snapshot ``label``."""
    if not _LABEL.match(label):
        return None
    try:
        index = json.loads((Path(folder) / f"{label}.json").read_text())
        key = str(index["functions"][name])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if re.fullmatch(r"[0-9a-f]{64}", key) else None


def names_used(func: types.FunctionType) -> set[str]:
    """Global names a function's code (and its nested code) refers to."""
    names, todo = set(), [func.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def identifiers(text: str) -> set[str]:
    """Every identifier in a piece of Python (doctest prompts allowed): the names a test may use.

    >>> sorted(identifiers(">>> assert abs(x.mean() - 1e-9) < tol"))
    ['abs', 'assert', 'tol', 'x']
    """
    return set(re.findall(r"(?<![A-Za-z0-9_.])[A-Za-z_][A-Za-z0-9_]*", text))
