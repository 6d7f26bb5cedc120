"""The one base class of every Python object that owns a native handle.

:class:`NativeHandle` gives :class:`~metaweight.Network`, :class:`~metaweight.Trainer`,
:class:`~metaweight.law.Strategy` and :class:`~metaweight.law.LAWSearch` the same lifetime rules:

- every object has a lock; ``_hold(what)`` takes it for one call or raises ``BusyError`` naming the
  call (a network's lock also guards its trainers' calls);
- ``close()`` frees the native object once (idempotent), under the lock where closing must wait for
  nobody (a network, a trainer: closing one in use by another thread raises ``BusyError``);
- ``closed`` tells whether it was closed;
- ``with obj:`` closes it on exit;
- ``__del__`` frees a handle nobody closed, never raising (also at interpreter shutdown);
- pickling, ``copy.copy`` and ``copy.deepcopy`` raise :class:`NotCopyableError`: a copy would share
  one native handle, and whichever copy is freed first would leave the other dangling.

:func:`refuses_reentry` guards a method against being called again from inside itself on the same
thread (e.g. ``fit`` from one of its own callbacks).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

from . import _core
from .errors import BusyError, NotCopyableError, StateError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["NativeHandle", "NotCopyableError", "refuses_reentry"]


class NativeHandle:
    """Owns one native object: lifetime, lock for close, context manager, copy refusal.

    Subclasses set ``_noun`` (for messages) and ``_copy_advice`` (what to do instead of a copy),
    implement :meth:`_free`, and override :meth:`_close_guard` when closing must hold a lock.
    """

    #: The native handle; None before creation and after close.
    _handle: int | None = None
    #: Set by close(); a handle may also be None before it is created (a lazily created search).
    _closed: bool = False
    _lock: threading.Lock
    _noun: ClassVar[str] = "object"
    _copy_advice: ClassVar[str] = ""
    #: What BusyError adds after "in use by another thread", and its advice.
    _busy_detail: ClassVar[str] = ""
    _busy_advice: ClassVar[str] = "use one per thread, or guard it with a lock"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        obj = super().__new__(cls)
        obj._lock = threading.Lock()
        return obj

    def _hold(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Holds this object's lock for one call; BusyError when another thread holds it.

        The holder is :class:`metaweight._core.Hold`, whose enter and exit are C: no Python bytecode
        runs between the end of the call and the release, so a KeyboardInterrupt can never leave
        the lock held (as it could inside a generator context manager's ``__exit__``).
        """
        return _core.Hold(self._lock, functools.partial(self._busy_error, what))

    def _busy_error(self, what: str) -> BusyError:
        """The BusyError for ``what`` when another thread holds this object's lock."""
        return BusyError(
            f"{what}: the {self._noun} is in use by another thread{self._busy_detail}; {self._busy_advice}"
        )

    def _free(self, handle: int) -> None:
        """Frees the native object (``_core.<kind>_free``)."""
        raise NotImplementedError

    def _close_guard(self) -> contextlib.AbstractContextManager[object]:
        """Held while the handle is taken and freed; BusyError when another thread uses it."""
        return contextlib.nullcontext()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Frees the native object. Idempotent; any later use raises ClosedError.

        Raises:
            BusyError: another thread is using it right now (objects with a lock).
        """
        if self._handle is None:
            self._closed = True
            return
        with self._close_guard():
            h, self._handle = self._handle, None
            self._closed = True
            if h is not None:
                self._free(h)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        h = self._handle
        if h is not None:
            self._handle = None
            with contextlib.suppress(Exception):  # freeing must not raise (nor at shutdown)
                self._free(h)

    # -- no copies: a copy would share (and double-free) the native handle

    def _refuse_copy(self, how: str) -> NoReturn:
        cls = type(self).__name__
        advice = f"; {self._copy_advice}" if self._copy_advice else ""
        raise NotCopyableError(
            f"{cls} objects cannot be {how}: they own a native {self._noun} that a copy would share{advice}"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self._refuse_copy("pickled")

    def __reduce__(self) -> NoReturn:
        self._refuse_copy("pickled")

    def __getstate__(self) -> NoReturn:
        self._refuse_copy("pickled")

    def __copy__(self) -> NoReturn:
        self._refuse_copy("copied with copy.copy")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        self._refuse_copy("copied with copy.deepcopy")


F = TypeVar("F", bound=Callable[..., Any])


def refuses_reentry(what: str) -> Callable[[F], F]:
    """Makes a method raise StateError when called again from inside itself on the same thread.

    The method's own nested calls pass ``_plain=True`` and are let through. Calls from other
    threads are not affected (the native lock answers those with BusyError).
    """

    def wrap(method: F) -> F:
        attr = f"_running_{method.__name__}"

        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            me = threading.get_ident()
            owner = getattr(self, attr, None)
            if owner == me and not kwargs.get("_plain"):
                raise StateError(
                    f"{what}: called again while this object's {what} is running on this thread (from one "
                    f"of its callbacks?); return True from the callback to stop, then call {what} again"
                )
            if owner is not None:
                return method(self, *args, **kwargs)
            setattr(self, attr, me)
            try:
                return method(self, *args, **kwargs)
            finally:
                setattr(self, attr, None)

        return guarded  # type: ignore[return-value]

    return wrap
