"""`Context`: parameters, secrets and named tables shared by the steps of a flow (spec STEPS.md §1.2)."""

from __future__ import annotations

from typing import Any

__all__ = ["Context"]


class Context:
    """Parameters, secrets and tables for a flow.

    Examples
    --------
    >>> ctx = Context(initial_parameters={"threshold": 3})
    >>> ctx.get_param("threshold"), ctx.get_param("missing", 0)
    (3, 0)
    """

    def __init__(
        self,
        initial_secrets: dict[str, Any] | None = None,
        initial_parameters: dict[str, Any] | None = None,
        initial_tables: dict[str, Any] | None = None,
    ) -> None:
        self._secrets = dict(initial_secrets or {})
        self._parameters = dict(initial_parameters or {})
        self._tables = dict(initial_tables or {})

    def get_param(self, key: str, default: Any = None) -> Any:
        """The parameter named `key`, or `default`."""
        return self._parameters.get(key, default)

    def set_param(self, key: str, value: Any) -> None:
        """Set a parameter."""
        self._parameters[key] = value

    def get_secret(self, key: str) -> Any:
        """The secret named `key`, or ``None``."""
        return self._secrets.get(key)

    def set_secret(self, key: str, value: Any) -> None:
        """Set a secret."""
        self._secrets[key] = value

    def get_table(self, name: str) -> Any:
        """The `Table` registered under `name`; `KeyError` naming it if absent."""
        try:
            return self._tables[name]
        except KeyError:
            msg = f"no table named {name!r} in the context"
            raise KeyError(msg) from None

    def set_table(self, name: str, table: Any) -> None:
        """Register a table under `name`."""
        self._tables[name] = table
