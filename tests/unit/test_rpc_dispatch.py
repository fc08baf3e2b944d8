"""The transport-free JSON-RPC core: method table, checks in spec §1.7 order, envelopes."""

import asyncio

import orjson
import pytest

from ledger.errors import EntityNotFound
from node.rpc.dispatch import Dispatcher, MethodTable, register_help
from node.rpc.errors import RpcError
from node.rpc.help import HELP

CHAIN = "erpchain"


def build_table() -> MethodTable:
    table = MethodTable()
    table.register("echo", lambda params: params, min_params=0, max_params=3,
                   help="echo ( a b c )\n\nReturns its params.", category="Control")

    async def slow_echo(params):
        await asyncio.sleep(0)
        return {"echoed": params}

    table.register("aecho", slow_echo, min_params=1, max_params=1,
                   help="aecho a\n\nReturns its param, asynchronously.", category="Control")

    def missing(params):
        raise EntityNotFound(f"Stream with this name not found: {params[0]}")

    table.register("missing", missing, min_params=1, max_params=1,
                   help="missing x\n\nAlways fails.", category="Streams")
    table.register("unencodable", lambda params: {"x": object()}, min_params=0, max_params=0,
                   help="unencodable\n\nReturns something JSON cannot hold.", category="Control")
    table.register_standard("stop", lambda params: "chainmill server stopping")
    table.register_standard("getinitstatus", lambda params: {"initialized": False})
    register_help(table)
    return table


def call(dispatcher, obj):
    return asyncio.run(dispatcher.handle_object(obj))


def body(dispatcher, raw: bytes):
    return asyncio.run(dispatcher.handle_body(raw))


@pytest.fixture
def dispatcher():
    return Dispatcher(build_table(), chain_name=CHAIN, allow_methods=None)


def test_rpc_dispatch_success_envelope_bytes_are_exact(dispatcher):
    out, status = body(dispatcher, b'{"method":"echo","params":[1,"a"],"id":"42","jsonrpc":"2.0"}')
    assert status == 200
    assert out == b'{"result":[1,"a"],"error":null,"id":"42"}\n'


def test_rpc_dispatch_absent_params_and_null_chain_name_are_defaults(dispatcher):
    envelope, status = call(dispatcher, {"method": "echo", "chain_name": None})
    assert (envelope, status) == ({"result": [], "error": None, "id": None}, 200)
    envelope, status = call(dispatcher, {"method": "echo", "params": None, "id": 3})
    assert (envelope["result"], status) == ([], 200)


def test_rpc_dispatch_async_handlers_are_awaited(dispatcher):
    envelope, status = call(dispatcher, {"method": "aecho", "params": [5], "id": 1})
    assert (envelope["result"], status) == ({"echoed": [5]}, 200)


def test_rpc_dispatch_detects_async_callable_objects():
    class Handler:
        async def __call__(self, params):
            return "called"

    table = MethodTable()
    table.register("x", Handler(), min_params=0, max_params=0, help="x", category="Control")
    envelope, _ = call(Dispatcher(table, chain_name=CHAIN), {"method": "x"})
    assert envelope["result"] == "called"


def test_rpc_dispatch_registering_twice_is_refused():
    table = build_table()
    with pytest.raises(ValueError):
        table.register("echo", print, min_params=0, max_params=0, help="", category="Control")
    with pytest.raises(ValueError):
        table.register("bad", print, min_params=2, max_params=1, help="", category="Control")


def test_rpc_dispatch_register_standard_uses_help_module():
    table = MethodTable()
    table.register_standard("publish", lambda params: "txid")
    method = table.get("publish")
    assert (method.min_params, method.max_params) == (3, 4)
    assert method.help == HELP["publish"]
    assert method.category == "Streams"
    assert not method.warmup_ok


def test_rpc_dispatch_check_order_warmup_before_validation(dispatcher):
    # Warm-up (step 4) comes before request validation (step 5) and unknown method (step 6).
    dispatcher.warmup_status = "Loading block index..."
    for obj in ({"method": "echo", "params": {"a": 1}},
                {"method": "nosuch"},
                {"method": "echo", "chain_name": "other"}):
        envelope, status = call(dispatcher, obj)
        assert envelope["error"] == {"code": -28, "message": "Loading block index..."}
        assert status == 500
    # ... but a non-string method is still an invalid request.
    envelope, status = call(dispatcher, {"method": 5})
    assert (envelope["error"]["code"], status) == (-32600, 400)


def test_rpc_dispatch_check_order_validation_before_unknown_and_allow(dispatcher):
    dispatcher = Dispatcher(build_table(), chain_name=CHAIN, allow_methods={"echo"})
    envelope, status = call(dispatcher, {"method": "nosuch", "params": {}})
    assert (envelope["error"]["code"], status) == (-32600, 400)
    envelope, status = call(dispatcher, {"method": "nosuch"})
    assert (envelope["error"]["code"], status) == (-32601, 404)
    # Disallowed method: -701 even with a wrong parameter count (step 9 before the count).
    envelope, status = call(dispatcher, {"method": "aecho", "params": []})
    assert (envelope["error"]["code"], status) == (-701, 500)


def test_rpc_dispatch_wrong_param_count_gives_full_help(dispatcher):
    envelope, status = call(dispatcher, {"method": "aecho", "params": [], "id": 9})
    assert envelope == {"result": None,
                        "error": {"code": -1, "message": "aecho a\n\nReturns its param, asynchronously."},
                        "id": 9}
    assert status == 500


def test_rpc_dispatch_domain_errors_are_mapped(dispatcher):
    envelope, status = call(dispatcher, {"method": "missing", "params": ["orders"], "id": 1})
    assert envelope["error"] == {"code": -708, "message": "Stream with this name not found: orders"}
    assert envelope["result"] is None and status == 500


def test_rpc_dispatch_explicit_rpc_error_keeps_its_code():
    table = MethodTable()

    def raises(params):
        raise RpcError(-32601, "not here after all")

    table.register("x", raises, min_params=0, max_params=0, help="x", category="Control")
    envelope, status = call(Dispatcher(table, chain_name=CHAIN), {"method": "x"})
    assert (envelope["error"]["code"], status) == (-32601, 404)


def test_rpc_dispatch_unencodable_result_is_an_internal_error(dispatcher):
    out, status = body(dispatcher, b'{"method":"unencodable","id":7}')
    reply = orjson.loads(out)
    assert status == 500 and reply["error"]["code"] == -32603 and reply["id"] == 7
    out, status = body(dispatcher, b'[{"method":"unencodable","id":1},{"method":"echo","id":2}]')
    replies = orjson.loads(out)
    assert status == 200
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[0]["error"]["code"] == -32603 and replies[1]["error"] is None


def test_rpc_dispatch_help_method(dispatcher):
    envelope, _ = call(dispatcher, {"method": "help"})
    overview = envelope["result"]
    assert overview.startswith("== Control ==\n")
    assert "echo ( a b c )" in overview and "== Streams ==\nmissing x" in overview
    envelope, _ = call(dispatcher, {"method": "help", "params": ["stop"]})
    assert envelope["result"] == HELP["stop"]
    envelope, _ = call(dispatcher, {"method": "help", "params": ["nosuch"]})
    assert (envelope["result"], envelope["error"]) == ("help: unknown command: nosuch", None)
    envelope, _ = call(dispatcher, {"method": "help", "params": [5]})
    assert envelope["error"]["code"] == -8


def test_rpc_dispatch_non_object_request(dispatcher):
    for obj in (5, "echo", None, []):
        envelope, status = call(dispatcher, obj)
        assert envelope["error"]["code"] == -32600 and envelope["id"] is None and status == 400


def test_rpc_dispatch_before_reply_is_awaited_once_per_request_before_the_reply():
    events = []
    table = build_table()
    table.register("mark", lambda params: events.append("handler") or "ok", min_params=0,
                   max_params=0, help="mark\n\nRecords the call.", category="Control")

    async def barrier() -> None:
        events.append("barrier")

    d = Dispatcher(table, chain_name=CHAIN, before_reply=barrier)
    out, status = body(d, b'{"method":"mark","id":1}')
    assert status == 200 and events == ["handler", "barrier"]
    events.clear()
    out, status = body(d, b'[{"method":"mark","id":1},{"method":"mark","id":2}]')
    assert status == 200 and events == ["handler", "handler", "barrier"]

    async def disk_full() -> None:
        raise OSError(28, "No space left on device")

    out, status = body(Dispatcher(table, chain_name=CHAIN, before_reply=disk_full),
                       b'{"method":"mark","id":1}')
    assert status == 500
    assert orjson.loads(out)["error"]["message"].startswith("Cannot write to disk")


def test_dispatch_methods_wait_while_the_read_barrier_is_cleared():
    """The node clears the barrier while a block is committed; no method runs meanwhile."""
    table = MethodTable()
    ran: list[str] = []
    table.register("probe", lambda params: ran.append("probe") or "ok", min_params=0,
                   max_params=0, help="probe\n\nRecords that it ran.", category="Control")
    dispatcher = Dispatcher(table, chain_name="c")

    async def scenario() -> None:
        barrier = asyncio.Event()
        dispatcher.read_barrier = barrier
        call = asyncio.ensure_future(dispatcher.handle_object({"method": "probe", "id": 1}))
        for _ in range(5):
            await asyncio.sleep(0)
        assert ran == [] and not call.done()
        barrier.set()
        envelope, status = await call
        assert envelope["result"] == "ok" and status == 200

    asyncio.run(scenario())


def _made(out: bytes, status: int) -> tuple[str, bytes, int]:
    return "made", out, status


def test_rpc_dispatch_body_now_answers_plain_methods_without_awaiting(dispatcher):
    async def scenario() -> None:
        made = dispatcher.handle_body_now(b'{"method":"echo","params":[1],"id":7}', _made)
        assert made == ("made", b'{"result":[1],"error":null,"id":7}\n', 200)
        assert dispatcher.handle_body_now(b"{nope", _made)[2] == 500
        assert dispatcher.handle_body_now(b'{"method":"missing","params":["s"],"id":1}',
                                          _made)[2] == 500
        # These need awaiting: nothing runs, handle_body answers them.
        assert dispatcher.handle_body_now(b'{"method":"aecho","params":[1],"id":1}', _made) \
            is None
        assert dispatcher.handle_body_now(b'[{"method":"aecho","params":[1],"id":1}]',
                                          _made) is None
        barrier = asyncio.Event()
        dispatcher.read_barrier = barrier
        assert dispatcher.handle_body_now(b'{"method":"echo","id":1}', _made) is None
        assert dispatcher.handle_body_now(b'{"method":"stop","id":1}', _made)[2] == 200

    asyncio.run(scenario())


def _marking_dispatcher() -> tuple[Dispatcher, list[str], list]:
    """A dispatcher with a plain method `mark` that records each run in `ran`, and an
    `on_durable` that keeps each pending completion in `pending` (the test completes them)."""
    ran: list[str] = []
    table = build_table()
    table.register("mark", lambda params: ran.append("handler") or "ok", min_params=0,
                   max_params=0, help="mark\n\nRecords the call.", category="Control")
    pending: list = []

    def on_durable(done) -> bool:
        pending.append(done)
        return True

    async def barrier() -> None:
        raise AssertionError("the fast path uses on_durable, not before_reply")

    return (Dispatcher(table, chain_name=CHAIN, before_reply=barrier, on_durable=on_durable),
            ran, pending)


def test_rpc_dispatch_body_now_waits_for_on_durable_and_maps_a_disk_error():
    d, ran, pending = _marking_dispatcher()

    async def scenario() -> None:
        first = d.handle_body_now(b'{"method":"mark","id":1}', _made)
        second = d.handle_body_now(b'{"method":"mark","id":2}', _made)
        assert ran == ["handler", "handler"] and not first.done() and not second.done()
        pending[0](None)
        pending[1](OSError(28, "No space left on device"))
        assert (await first)[1:] == (b'{"result":"ok","error":null,"id":1}\n', 200)
        _, out, status = await second
        assert status == 500
        assert orjson.loads(out)["error"]["message"].startswith("Cannot write to disk")

    asyncio.run(scenario())
    # Without the callback form, a before_reply hook sends every body the awaiting way.
    plain = Dispatcher(d.table, chain_name=CHAIN, before_reply=d.before_reply)
    assert plain.handle_body_now(b'{"method":"mark","id":1}', _made) is None


_BATCH = (b'[{"method":"echo","params":[1],"id":1},5,{"method":"missing","params":["s"],"id":2},'
          b'{"method":"nope","id":3},{"method":"echo","params":[1,2,3,4],"id":4},'
          b'{"method":"unencodable","id":5},{"id":6},{"method":"echo","id":[7]}]')


def test_rpc_dispatch_body_now_answers_a_plain_batch_as_handle_body_does(dispatcher,
                                                                        monkeypatch):
    """Every element's answer and error, in order, byte for byte the awaiting path's."""
    import node.rpc.dispatch as dispatch

    monkeypatch.setattr(dispatch, "BATCH_SLICE", 60.0)  # one slice, however loaded the machine
    expected = body(dispatcher, _BATCH)

    async def scenario() -> None:
        assert dispatcher.handle_body_now(_BATCH, _made) == ("made", *expected)
        assert dispatcher.handle_body_now(b"[]", _made) == ("made", b"[]\n", 200)

    asyncio.run(scenario())
    assert expected[1] == 200 and len(orjson.loads(expected[0])) == 8


def test_rpc_dispatch_batch_with_an_async_element_finishes_in_order(dispatcher):
    raw = (b'[{"method":"echo","params":[1],"id":1},{"method":"aecho","params":[2],"id":2},'
           b'{"method":"echo","params":[3],"id":3}]')
    expected = body(dispatcher, raw)

    async def scenario() -> None:
        later = dispatcher.handle_body_now(raw, _made)
        assert not isinstance(later, tuple)
        assert await later == ("made", *expected)

    asyncio.run(scenario())
    assert [r["result"] for r in orjson.loads(expected[0])] == [[1], {"echoed": [2]}, [3]]


def test_rpc_dispatch_batch_past_its_slice_lets_others_run_then_finishes(monkeypatch):
    import node.rpc.dispatch as dispatch

    events: list[str] = []
    table = build_table()
    table.register("mark", lambda params: events.append("call") or params, min_params=0,
                   max_params=1, help="mark ( x )\n\nRecords the call.", category="Control")
    d = Dispatcher(table, chain_name=CHAIN)
    raw = b"[" + b",".join(b'{"method":"mark","params":[%d],"id":%d}' % (i, i)
                           for i in range(4)) + b"]"
    expected = body(d, raw)
    events.clear()
    monkeypatch.setattr(dispatch, "BATCH_SLICE", 0.0)

    async def scenario() -> None:
        later = d.handle_body_now(raw, _made)
        assert not isinstance(later, tuple)
        task = asyncio.ensure_future(later)
        asyncio.get_running_loop().call_soon(events.append, "other")
        assert await task == ("made", *expected)

    asyncio.run(scenario())
    assert events[:2] == ["call", "other"] and events.count("call") == 4


def test_rpc_dispatch_batch_waits_once_for_the_disk_and_not_while_the_barrier_is_shut(
        monkeypatch):
    import node.rpc.dispatch as dispatch

    monkeypatch.setattr(dispatch, "BATCH_SLICE", 60.0)  # one slice, however loaded the machine
    d, ran, pending = _marking_dispatcher()
    raw = b'[{"method":"mark","id":1},{"method":"mark","id":2},{"method":"mark","id":3}]'

    async def scenario() -> None:
        reply = d.handle_body_now(raw, _made)
        assert ran == ["handler"] * 3 and len(pending) == 1 and not reply.done()
        pending[0](None)
        _, out, status = await reply
        assert status == 200 and [r["id"] for r in orjson.loads(out)] == [1, 2, 3]
        d.read_barrier = asyncio.Event()  # a block is being committed
        assert d.handle_body_now(raw, _made) is None and len(ran) == 3

    asyncio.run(scenario())


def test_rpc_dispatch_batch_rest_awaits_only_the_elements_that_must_wait(monkeypatch):
    """After its first slice a batch goes on without the task path: only an `async def`
    element goes through `handle_object`, the plain ones around it are answered directly,
    and the answers are the awaiting path's, in order."""
    import node.rpc.dispatch as dispatch

    d = Dispatcher(build_table(), chain_name=CHAIN)
    raw = (b'[{"method":"echo","params":[0],"id":0},{"method":"aecho","params":[1],"id":1},'
           + b",".join(b'{"method":"echo","params":[%d],"id":%d}' % (i, i) for i in range(2, 6))
           + b',{"method":"missing","params":["x"],"id":6}]')
    expected = body(d, raw)
    awaited: list[object] = []
    real = d.handle_object

    async def counting(obj):
        awaited.append(obj["id"])
        return await real(obj)

    monkeypatch.setattr(d, "handle_object", counting)
    monkeypatch.setattr(dispatch, "BATCH_SLICE", 0.0)  # a yield between every two elements

    async def scenario() -> None:
        later = d.handle_body_now(raw, _made)
        assert not isinstance(later, tuple)
        assert await later == ("made", *expected)

    asyncio.run(scenario())
    assert awaited == [1]
    answers = orjson.loads(expected[0])
    assert [a["id"] for a in answers] == list(range(7))
    assert answers[6]["error"]["code"] == -708 and answers[1]["result"] == {"echoed": [1]}


def test_rpc_dispatch_batch_waits_for_the_barrier_mid_batch_then_goes_on_in_order(
        monkeypatch):
    """A block commit that starts inside a batch holds the batch's next elements until it
    is over, then they run in order (the barrier is checked per element)."""
    import node.rpc.dispatch as dispatch

    monkeypatch.setattr(dispatch, "BATCH_SLICE", 60.0)  # one slice, however loaded the machine
    table = build_table()
    ran: list[int] = []
    barrier = asyncio.Event()

    def step(params):
        ran.append(params[0])
        if params[0] == 1:
            barrier.clear()  # as the node does when a block starts committing
            asyncio.get_running_loop().call_later(0.01, barrier.set)
        return params[0]

    table.register("step", step, min_params=1, max_params=1,
                   help="step n\n\nRecords n.", category="Control")
    d = Dispatcher(table, chain_name=CHAIN)
    raw = b"[" + b",".join(b'{"method":"step","params":[%d],"id":%d}' % (i, i)
                           for i in range(4)) + b"]"

    async def scenario() -> None:
        barrier.set()
        d.read_barrier = barrier
        later = d.handle_body_now(raw, _made)
        assert ran == [0, 1] and not isinstance(later, tuple)
        task = asyncio.ensure_future(later)
        for _ in range(3):
            await asyncio.sleep(0)
        assert ran == [0, 1] and not task.done()
        _, out, status = await task
        assert status == 200 and [r["result"] for r in orjson.loads(out)] == [0, 1, 2, 3]
        assert ran == [0, 1, 2, 3]

    asyncio.run(scenario())
