"""What the Ray back ends share (grids, LAW episodes): the ``ray=`` argument's address and the
import of the optional :mod:`ray` package. Importing this module does not import Ray."""

from __future__ import annotations

from typing import Any

from .errors import InvalidArgumentError

__all__ = ["import_ray", "ray_address"]


def ray_address(ray: Any) -> str:
    """The address a ``ray`` argument names: ``True`` or ``"auto"`` → ``"auto"`` (the cluster this
    machine belongs to: ``RAY_ADDRESS``, else the latest ``ray start`` here, or one already
    connected); ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` as given.

    Raises:
        InvalidArgumentError: ``ray`` is neither True, ``"auto"`` nor an address.
    """
    if ray is True:
        return "auto"
    if isinstance(ray, str):
        text = ray.strip()
        if text == "auto" or text.startswith("ray://"):
            return text
        host, sep, port = text.rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536 and " " not in host:
            return text
    raise InvalidArgumentError(f"ray: expected True, 'auto' or an address HOST:PORT, got {ray!r}")


def import_ray(what: str) -> Any:
    """The :mod:`ray` module, imported now.

    Args:
        what: what needs Ray, for the message (e.g. "running a grid on Ray").

    Raises:
        ImportError: ray is not installed (the message names the ``metaweight[ray]`` extra).
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"ray: {what} needs the ray package: pip install 'metaweight[ray]'") from e
    return ray
