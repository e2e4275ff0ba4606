"""Objects, directories and listings of the V3IO emulator, through the real v3io SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import v3io.aio.dataplane
import v3io.dataplane

from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

NEVER = v3io.aio.dataplane.RaiseForStatus.never
C = "bigdata"
OBJ_DIR = "/v3io-py-test object"
OBJ = OBJ_DIR + "/obj ect.txt"


@pytest.fixture
async def client(v3io_emulator: V3ioEmulator) -> AsyncIterator[v3io.aio.dataplane.Client]:
    c = v3io.aio.dataplane.Client(endpoint=v3io_emulator.url, access_key="k", logger_verbosity="ERROR")
    yield c
    await c.close()


async def test_object_put_get_head_delete(client) -> None:
    contents = "vegans are better than everyone"
    assert (await client.object.get(C, OBJ, raise_for_status=NEVER)).status_code == 404
    await client.object.put(C, OBJ, body=contents)
    assert (await client.object.get(C, OBJ)).body.decode() == contents
    head = await client.object.head(C, OBJ)
    assert ("Content-Length", str(len(contents))) in head.headers.items()
    dir_head = await client.object.head(C, OBJ_DIR)
    assert ("Content-Length", "0") in dir_head.headers.items()
    await client.object.delete(C, OBJ)
    assert (await client.object.get(C, OBJ, raise_for_status=NEVER)).status_code == 404


async def test_append_and_ranges(client) -> None:
    for part in ("First part", "Second part", "Third part"):
        await client.object.put(C, OBJ, body=part, append=True)
    assert (await client.object.get(C, OBJ)).body == b"First partSecond partThird part"
    await client.object.put(C, OBJ, body="1234567890")  # no append: replaces
    assert (await client.object.get(C, OBJ, offset=4)).body == b"567890"
    assert (await client.object.get(C, OBJ, offset=4, num_bytes=3)).body == b"567"
    assert (await client.object.get(C, OBJ, offset=0, num_bytes=100)).body == b"1234567890"
    binary = bytes(range(256))
    await client.object.put(C, "bin", body=binary)
    assert (await client.object.get(C, "bin")).body == binary


async def test_schema_read_with_a_double_slash(v3io_emulator, client) -> None:
    # storey 1.14.1 reads `GET /bigdata/agg//.schema` when the table path ends in '/' (pitfall §1.3.9)
    await client.object.put(C, "agg/.schema", body=b'{"a": 1}')
    assert (await client.object.get(C, "agg//.schema")).body == b'{"a": 1}'
    assert v3io_emulator.requests[-1].path == f"/{C}/agg/.schema"


async def test_listing_contents_and_directories(client) -> None:
    base = "v3io-py-test-container"
    for i in range(5):
        await client.object.put(C, f"{base}/object-{i}.txt", body="x" * i)
        await client.object.put(C, f"{base}/dir-{i}/")
    dirs = await client.container.list(C, base, get_all_attributes=True, directories_only=True)
    assert dirs.output.contents == []
    assert [p.prefix for p in dirs.output.common_prefixes] == [f"{base}/dir-{i}/" for i in range(5)]
    full = await client.container.list(C, base, get_all_attributes=True)
    assert [(o.key, o.size) for o in full.output.contents] == [
        (f"{base}/object-{i}.txt", i) for i in range(5)
    ]
    assert all(isinstance(o.inode_number, int) and o.mode for o in full.output.contents)
    assert len(full.output.common_prefixes) == 5
    assert full.output.is_truncated == "false"
    missing = await client.container.list(C, "/no-such-path", raise_for_status=NEVER)
    assert missing.status_code == 404
    assert "No such file" in str(missing.body)
    # the v3io-py cleanup idiom: delete contents, then the (now empty) directories
    for content in full.output.contents:
        await client.object.delete(C, content.key)
    for prefix in full.output.common_prefixes:
        await client.object.delete(C, prefix.prefix)
    await client.object.delete(C, base)
    assert (await client.container.list(C, base, raise_for_status=NEVER)).status_code == 404


async def test_listing_pagination_with_marker(client) -> None:
    for i in range(7):
        await client.object.put(C, f"pages/o{i}", body="x")
    seen, marker = [], None
    while True:
        resp = await client.container.list(C, "pages", limit=3, marker=marker)
        seen += [o.key for o in resp.output.contents]
        if resp.output.is_truncated != "true":
            break
        marker = resp.output.next_marker
    assert seen == [f"pages/o{i}" for i in range(7)]


async def test_deleting_a_non_empty_directory_is_refused(client) -> None:
    await client.object.put(C, "full/child", body="x")
    resp = await client.object.delete(C, "full", raise_for_status=NEVER)
    assert resp.status_code == 409
    assert (await client.object.get(C, "full/child")).body == b"x"


async def test_objects_and_items_share_one_namespace(client, v3io_emulator) -> None:
    await client.kv.put(C, "mixed", "item", {"a": 1})
    await client.object.put(C, "mixed/.hidden", body="h")
    listing = await client.container.list(C, "mixed")
    assert sorted(o.key for o in listing.output.contents) == ["mixed/.hidden", "mixed/item"]
    items = await client.kv.new_cursor(C, "mixed").all()
    assert items == [{"a": 1}]  # names starting with '.' are not items
    await client.object.delete(C, "mixed/item")  # the aio kv.delete workaround
    assert v3io_emulator.item(f"/{C}/mixed/item") is None


async def test_containers_exist_on_first_use(client) -> None:
    await client.object.put("newcontainer", "x", body="1")
    await client.object.put("newcontainer", "d/y", body="2")
    root = await client.container.list("newcontainer", "/")
    assert root.output.name == "newcontainer"
    assert [o.key for o in root.output.contents] == ["x"]
    assert [p.prefix for p in root.output.common_prefixes] == ["d/"]


def test_sync_client_objects_and_containers(v3io_emulator_thread: V3ioEmulator) -> None:
    c = v3io.dataplane.Client(endpoint=v3io_emulator_thread.url, access_key="k", logger_verbosity="ERROR")
    try:
        for i in range(4):
            c.batch.object.put(C, f"{OBJ_DIR}/object{i}", body=f"object-{i}")
        assert [r.status_code for r in c.batch.wait()] == [200] * 4
        for i in (0, 10, 2):
            c.batch.object.get(C, f"{OBJ_DIR}/object{i}")
        responses = c.batch.wait(raise_for_status="never")
        assert [r.status_code for r in responses] == [200, 404, 200]
        assert responses[2].body == b"object-2"
        names = [container.name for container in c.get_containers().output.containers]
        assert {"bigdata", "users", "projects"} <= set(names)
        contents = c.get_container_contents(C, OBJ_DIR.strip("/"), raise_for_status="never")
        assert len(contents.output.contents) == 4
        c.delete_object(C, f"{OBJ_DIR}/object0")
        assert c.object.get(C, f"{OBJ_DIR}/object0", raise_for_status="never").status_code == 404
    finally:
        c.close()
