"""KV operations of the emulator: PutItem, UpdateItem, GetItem, GetItems.

Every write gives the item a new, strictly later mtime and answers with the
``X-v3io-transaction-verifier: __mtime_secs==<s> and __mtime_nsecs==<ns>`` header, which a client may send
back verbatim as a ``ConditionExpression`` (optimistic concurrency). A false condition answers HTTP 400 with
``ErrorCode`` 16777244 and changes nothing, unless an ``AlternateUpdateExpression`` is given.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

from storey.testing._v3io_expr import ExprError, apply_update, eval_condition
from storey.testing._v3io_model import (
    EISDIR,
    FALSE_CONDITION,
    Container,
    Node,
    OpError,
    Reply,
    Request,
    bad_request,
    decode_attributes,
    encode_attribute,
    json_reply,
    not_found,
    parent_of,
)

__all__ = ["get_item", "get_items", "put_item", "update_item"]

VERIFIER_HEADER = "X-v3io-transaction-verifier"
_UPDATE_MODES = ("CreateOrReplaceAttributes",)


def _item_node(req: Request) -> tuple[Node | None, str]:
    """The node addressed by an item request (``None`` if absent) and the item name."""
    if not req.path or req.trailing_slash:
        msg = "an item request needs an item path (not a directory)"
        raise bad_request(msg)
    node = req.container.get(req.path)
    if node is not None and node.is_dir:
        raise OpError(400, EISDIR, f"Is a directory: {req.path}")
    return node, parent_of(req.path)[1]


def _view(node: Node | None, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user and system attributes an expression sees (nothing at all for a missing item)."""
    if node is None:
        return {}, {}
    return node.attrs, node.system_attributes(name)


def _check_names(attrs: dict[str, Any]) -> None:
    for name in attrs:
        if not name or name.startswith("__"):
            msg = f"invalid attribute name {name!r} (empty, or reserved for system attributes)"
            raise bad_request(msg)


def _condition(text: Any, node: Node | None, name: str) -> bool:
    if text is not None and not isinstance(text, str):
        msg = "ConditionExpression must be a string"
        raise bad_request(msg)
    attrs, system = _view(node, name)
    try:
        return eval_condition(text, attrs, system)
    except ExprError as exc:
        msg = f"invalid condition expression: {exc}"
        raise bad_request(msg) from exc


def _commit(container: Container, path: str, attrs: dict[str, Any]) -> Reply:
    node = container.create_file(path)
    node.attrs = attrs
    container.touch(node)
    return Reply(200, b"", {VERIFIER_HEADER: node.verifier()})


def put_item(req: Request) -> Reply:
    """PutItem: replace the item's attributes, or merge them when ``UpdateMode`` is given."""
    body = req.json()
    node, name = _item_node(req)
    try:
        item = decode_attributes(body.get("Item", {}))
    except (ValueError, binascii.Error) as exc:
        msg = f"invalid Item: {exc}"
        raise bad_request(msg) from exc
    _check_names(item)
    mode = body.get("UpdateMode")
    if mode is not None and mode not in _UPDATE_MODES:
        msg = f"unsupported UpdateMode {mode!r}"
        raise bad_request(msg)
    if not _condition(body.get("ConditionExpression"), node, name):
        raise OpError(400, FALSE_CONDITION)
    attrs = {**node.attrs, **item} if (mode is not None and node is not None) else item
    return _commit(req.container, req.path, attrs)


def update_item(req: Request) -> Reply:
    """UpdateItem: run ``UpdateExpression`` (or ``AlternateUpdateExpression`` when the condition is false)."""
    body = req.json()
    node, name = _item_node(req)
    expression = body.get("UpdateExpression")
    alternate = body.get("AlternateUpdateExpression")
    if expression is None and alternate is None:
        msg = "UpdateExpression is required"
        raise bad_request(msg)
    mode = body.get("UpdateMode", "CreateOrReplaceAttributes")
    if mode not in _UPDATE_MODES:
        msg = f"unsupported UpdateMode {mode!r}"
        raise bad_request(msg)
    if _condition(body.get("ConditionExpression"), node, name):
        text = expression or ""
    elif alternate is not None:
        text = alternate
    else:
        raise OpError(400, FALSE_CONDITION)
    if not isinstance(text, str):
        msg = "update expressions must be strings"
        raise bad_request(msg)
    attrs, system = _view(node, name)
    try:
        new_attrs = apply_update(text, attrs, system)
    except ExprError as exc:
        msg = f"invalid update expression: {exc}"
        raise bad_request(msg) from exc
    return _commit(req.container, req.path, new_attrs)


def select_attributes(node: Node, name: str, spec: Any) -> dict[str, Any]:
    """The attributes named by ``AttributesToGet``.

    ``*`` is every user attribute, ``**`` every user and system attribute; other names (system ones
    included, e.g. ``__mtime_secs``) are returned when present.
    """
    if spec is None:
        spec = "*"
    if not isinstance(spec, str):
        msg = "AttributesToGet must be a comma-separated string"
        raise bad_request(msg)
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    system = node.system_attributes(name)
    out: dict[str, Any] = {}
    if "*" in tokens or "**" in tokens:
        out.update(node.attrs)
    if "**" in tokens:
        out.update(system)
    for token in tokens:
        if token in ("*", "**"):
            continue
        if token in node.attrs:
            out[token] = node.attrs[token]
        elif token in system:
            out[token] = system[token]
    return out


def _encode_item(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: encode_attribute(v) for k, v in attrs.items()}


def get_item(req: Request) -> Reply:
    """GetItem: the requested attributes, with the transaction verifier; 404 if the item is absent."""
    body = req.json()
    node, name = _item_node(req)
    if node is None:
        raise not_found(req.path)
    item = select_attributes(node, name, body.get("AttributesToGet"))
    return json_reply({"Item": _encode_item(item)}, headers={VERIFIER_HEADER: node.verifier()})


def _encode_marker(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode("ascii")


def _decode_marker(marker: str) -> str:
    try:
        return base64.urlsafe_b64decode(marker.encode("ascii")).decode()
    except (ValueError, UnicodeError) as exc:
        msg = f"invalid Marker {marker!r}"
        raise bad_request(msg) from exc


def _int_param(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        msg = f"{key} must be an integer, got {value!r}"
        raise bad_request(msg) from exc


def _candidates(req: Request, body: dict[str, Any]) -> list[tuple[str, Node]]:
    table = req.path
    table_name = body.get("TableName")
    if table_name:
        table = "/".join(p for p in [table, *str(table_name).split("/")] if p)
    node = req.container.get(table)
    if node is None:
        raise not_found(table)
    if not node.is_dir:
        msg = f"not a table (directory): {table}"
        raise bad_request(msg)
    items = [
        (name, child)
        for name, child in req.container.list_children(table)
        if not child.is_dir and child.shard is None and not name.startswith(".")
    ]
    segment, total = _int_param(body, "Segment"), _int_param(body, "TotalSegment")
    if total is not None:
        if segment is None or not 0 <= segment < total:
            msg = f"Segment must be in [0, TotalSegment), got {segment!r} of {total!r}"
            raise bad_request(msg)
        items = [(n, c) for n, c in items if zlib.crc32(n.encode()) % total == segment]
    sharding_key = body.get("ShardingKey")
    if sharding_key:
        prefix = f"{sharding_key}."
        lo, hi = body.get("SortKeyRangeStart"), body.get("SortKeyRangeEnd")
        items = [
            (n, c)
            for n, c in items
            if n.startswith(prefix)
            and (not lo or n[len(prefix) :] >= lo)
            and (not hi or n[len(prefix) :] < hi)
        ]
    return items


def get_items(req: Request, page_size: int) -> Reply:
    """GetItems: one page of a table scan (filter, segments, sharding-key ranges, ``Limit``, ``Marker``).

    Items are scanned in name order (the real order is the service's hash order: *assumed* irrelevant to
    clients). A page holds at most ``min(Limit, page_size)`` matching items; a page that is not the last
    always holds at least one item, because the clients stop at an empty page. ``NextMarker`` is opaque.
    """
    body = req.json()
    items = _candidates(req, body)
    marker = body.get("Marker")
    start = 0
    if marker:
        after = _decode_marker(str(marker))
        start = next((i for i, (n, _) in enumerate(items) if n > after), len(items))
    limit = _int_param(body, "Limit")
    capacity = page_size if limit is None else max(0, min(limit, page_size))
    filt = body.get("FilterExpression")
    spec = body.get("AttributesToGet")
    page: list[dict[str, Any]] = []
    pos = start
    while pos < len(items) and len(page) < capacity:
        name, node = items[pos]
        pos += 1
        if filt:
            try:
                keep = eval_condition(filt, node.attrs, node.system_attributes(name))
            except ExprError as exc:
                msg = f"invalid filter expression: {exc}"
                raise bad_request(msg) from exc
            if not keep:
                continue
        page.append(_encode_item(select_attributes(node, name, spec)))
    last = pos >= len(items)
    out: dict[str, Any] = {
        "LastItemIncluded": "TRUE" if last else "FALSE",
        "NumItems": len(page),
        "Items": page,
    }
    if not last:
        out["NextMarker"] = _encode_marker(items[pos - 1][0]) if pos > start else (marker or "")
    return json_reply(out)
