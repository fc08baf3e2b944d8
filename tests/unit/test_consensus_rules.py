"""consensus.rules.apply_tx: who may do what (spec §4). Sending needs send, creating needs
create, a closed stream needs the stream's write; activate changes low-risk permissions at
once; high-risk ones need admin votes reaching admin consensus (votes for different block
ranges do not add up); per-stream permissions need one stream admin."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from consensus.rules import (
    PermChange,
    Rules,
    apply_tx,
    check_tx_limits,
    replay_perm_log,
    streamref_for,
)
from consensus.state import ChainState
from ledger.errors import DuplicateName, InvalidTransaction, PermissionDenied
from ledger.keys import KeyPair
from ledger.transactions import (
    NO_END,
    PERM_BITS,
    RESTRICT_WRITE,
    CreateStream,
    DataFormat,
    Op,
    Permission,
    Publish,
    Transaction,
)

CHAIN_ID = b"\xcc" * 32
SETUP = 10
HEIGHT = 20
"""Height the transactions are applied at: after the setup phase, so consensus applies."""
ADMIN, ADMIN2, ADMIN3, USER, OTHER = (KeyPair((i + 11).to_bytes(32, "big")) for i in range(5))
_nonces = itertools.count(1)


def make_rules(**changes) -> Rules:
    values = dict(
        chain_id=CHAIN_ID, anyone_can=frozenset(),
        admin_consensus={"admin": 0.5, "activate": 0.5, "mine": 0.5, "create": 0.0,
                         "issue": 0.0},
        setup_first_blocks=SETUP, mining_diversity=0.75, max_block_size=1_000_000,
        max_tx_size=100_000, max_items_per_tx=32, max_item_size=50_000,
        genesis_pubkey=ADMIN.pubkey, root_stream_name="", root_stream_open=True,
        target_block_time=0.2)
    values.update(changes)
    return Rules(**values)


def make_state(grants: Iterable[tuple[KeyPair, str]] = ()) -> ChainState:
    """A state where each (key, perm) is granted globally for all heights."""
    state = ChainState(height=HEIGHT - 1)
    for key, perm in grants:
        state.perms[(key.pubkey_hash, b"", perm)] = (0, NO_END)
    return state


def tx(key: KeyPair, *ops: Op, time: int = 1_000) -> Transaction:
    return Transaction.create(key, list(ops), CHAIN_ID, time, next(_nonces))


def grant(target: KeyPair, perms: str, entity: bytes = b"", start: int = 0,
          end: int = NO_END) -> Permission:
    bits = sum(PERM_BITS[p] for p in perms.split(","))
    return Permission(target.pubkey_hash, entity, bits, start, end)


def revoke(target: KeyPair, perms: str, entity: bytes = b"") -> Permission:
    return grant(target, perms, entity, 0, 0)


def create_stream(state: ChainState, rules: Rules, name: str, *, closed: bool,
                  creator: KeyPair = ADMIN) -> bytes:
    t = tx(creator, CreateStream(name, RESTRICT_WRITE if closed else 0))
    apply_tx(state, rules, t, HEIGHT, 100)
    return t.txid


def item(stream: bytes) -> Publish:
    return Publish(stream, ("k",), DataFormat.TEXT, b"hello")


ADMINS = [(k, p) for k in (ADMIN,) for p in ("send", "create", "admin", "activate")]


# -- send and create ------------------------------------------------------------------------


def test_rules_every_transaction_needs_send():
    rules = make_rules()
    state = make_state([(ADMIN, "send"), (ADMIN, "create")])
    stream = create_stream(state, rules, "s", closed=False)
    for op in (item(stream), CreateStream("t", 0), grant(OTHER, "connect")):
        with pytest.raises(PermissionDenied, match="send"):
            apply_tx(state, rules, tx(USER, op), HEIGHT)
    open_rules = make_rules(anyone_can=frozenset({"send"}))
    apply_tx(state, open_rules, tx(USER, item(stream)), HEIGHT)  # anyone-can-send


def test_rules_creating_a_stream_needs_create():
    rules = make_rules()
    state = make_state([(USER, "send")])
    with pytest.raises(PermissionDenied, match="create"):
        apply_tx(state, rules, tx(USER, CreateStream("s", 0)), HEIGHT)
    state = make_state([(USER, "send"), (USER, "create")])
    t = tx(USER, CreateStream("Orders", RESTRICT_WRITE, False, b'{"a":1}'))
    fx = apply_tx(state, rules, t, HEIGHT, 321)
    info = state.streams[t.txid]
    assert fx.streams == [info]
    assert (info.name, info.restrict, info.creator) == ("Orders", RESTRICT_WRITE,
                                                        USER.pubkey_hash)
    assert info.streamref == streamref_for(HEIGHT, 321, t.txid)
    assert state.stream_by_name("ORDERS") == info
    for perm in ("admin", "activate", "write"):  # the creator's per-stream permissions
        assert state.holds(USER.pubkey_hash, perm, HEIGHT, t.txid)


def test_rules_stream_names_are_unique_ignoring_case():
    rules = make_rules()
    state = make_state(ADMINS)
    create_stream(state, rules, "Orders", closed=False)
    with pytest.raises(DuplicateName):
        apply_tx(state, rules, tx(ADMIN, CreateStream("oRDERS", 0)), HEIGHT)
    create_stream(state, rules, "", closed=False)
    create_stream(state, rules, "", closed=False)  # nameless streams never clash


def test_rules_pending_stream_has_no_reference_yet():
    rules = make_rules()
    state = make_state(ADMINS)
    t = tx(ADMIN, CreateStream("s", 0))
    apply_tx(state, rules, t, HEIGHT, None)  # in the mempool
    assert state.streams[t.txid].streamref == ""


# -- publishing -----------------------------------------------------------------------------


def test_rules_closed_stream_needs_write():
    rules = make_rules()
    state = make_state([*ADMINS, (USER, "send")])
    closed = create_stream(state, rules, "closed", closed=True)
    opened = create_stream(state, rules, "open", closed=False)
    apply_tx(state, rules, tx(USER, item(opened)), HEIGHT)
    with pytest.raises(PermissionDenied, match="write"):
        apply_tx(state, rules, tx(USER, item(closed)), HEIGHT)
    with pytest.raises(PermissionDenied, match="write"):  # one closed item spoils the tx
        apply_tx(state, rules, tx(USER, item(opened), item(closed)), HEIGHT)
    apply_tx(state, rules, tx(ADMIN, item(closed)), HEIGHT)  # the creator holds write
    apply_tx(state, rules, tx(ADMIN, grant(USER, "write", closed)), HEIGHT)
    apply_tx(state, rules, tx(USER, item(closed)), HEIGHT)
    apply_tx(state, rules, tx(ADMIN, revoke(USER, "write", closed)), HEIGHT)
    with pytest.raises(PermissionDenied):
        apply_tx(state, rules, tx(USER, item(closed)), HEIGHT)


def test_rules_each_item_of_a_tx_is_checked_on_the_state_its_earlier_ops_made():
    # apply_tx checks a stream once for a run of items on it; an op that changes the state
    # in between (here the creator revoking its own write, then granting it back) must
    # make the next item on that stream be checked again.
    rules = make_rules()
    state = make_state(ADMINS)
    closed = create_stream(state, rules, "closed", closed=True)
    me = ADMIN.pubkey_hash
    apply_tx(state.copy(), rules, tx(ADMIN, *[item(closed)] * 5), HEIGHT)
    with pytest.raises(PermissionDenied, match="write"):
        apply_tx(state.copy(), rules, tx(ADMIN, item(closed), revoke(ADMIN, "write", closed),
                                         item(closed)), HEIGHT)
    after = state.copy()
    apply_tx(after, rules, tx(ADMIN, item(closed), revoke(ADMIN, "write", closed),
                              grant(ADMIN, "write", closed), item(closed)), HEIGHT)
    assert after.holds(me, "write", HEIGHT, closed)


def test_rules_publish_to_an_unknown_stream_is_invalid():
    with pytest.raises(InvalidTransaction, match="does not exist"):
        apply_tx(make_state([(USER, "send")]), make_rules(), tx(USER, item(b"\x99" * 32)), HEIGHT)


def test_rules_size_limits():
    rules = make_rules(max_items_per_tx=2, max_item_size=10, max_tx_size=2_000)
    stream = b"\x01" * 32
    check_tx_limits(tx(USER, item(stream), item(stream)), rules)
    with pytest.raises(InvalidTransaction, match="max-std-op-returns-count"):
        check_tx_limits(tx(USER, item(stream), item(stream), item(stream)), rules)
    with pytest.raises(InvalidTransaction, match="max-std-op-return-size"):
        check_tx_limits(tx(USER, Publish(stream, (), DataFormat.RAW, bytes(11))), rules)
    with pytest.raises(InvalidTransaction, match="max-std-tx-size"):
        check_tx_limits(tx(USER, Publish(stream, ("k" * 250,) * 10, DataFormat.RAW, b"")),
                        rules)


# -- low-risk global permissions ------------------------------------------------------------


def test_rules_activate_grants_low_risk_permissions_at_once():
    rules = make_rules()
    state = make_state([(USER, "send"), (USER, "activate")])
    fx = apply_tx(state, rules, tx(USER, grant(OTHER, "connect,send,receive,low1")), HEIGHT)
    assert [c.kind for c in fx.perm_log] == ["set"] * 4
    assert state.holds(OTHER.pubkey_hash, "send", HEIGHT)
    apply_tx(state, rules, tx(USER, revoke(OTHER, "send")), HEIGHT)
    assert not state.holds(OTHER.pubkey_hash, "send", HEIGHT)
    for high in ("create", "mine", "admin", "activate", "issue", "high1"):
        with pytest.raises(PermissionDenied, match="admin"):
            apply_tx(state, rules, tx(USER, grant(OTHER, high)), HEIGHT)


def test_rules_low_risk_grants_need_activate_or_admin():
    rules = make_rules()
    state = make_state([(USER, "send")])
    with pytest.raises(PermissionDenied, match="activate"):
        apply_tx(state, rules, tx(USER, grant(OTHER, "connect")), HEIGHT)
    state = make_state([(ADMIN, "send"), (ADMIN, "admin")])  # admin implies activate
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "send")), HEIGHT)
    assert state.holds(OTHER.pubkey_hash, "send", HEIGHT)


def test_rules_permission_block_ranges():
    rules = make_rules()
    state = make_state([(ADMIN, "send"), (ADMIN, "activate")])
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "send", start=30, end=40)), HEIGHT)
    assert [state.holds(OTHER.pubkey_hash, "send", h) for h in (29, 30, 39, 40)] == \
        [False, True, True, False]
    with pytest.raises(InvalidTransaction, match="start"):
        apply_tx(state, rules, tx(ADMIN, grant(OTHER, "send", start=50, end=40)), HEIGHT)


# -- high-risk global permissions: admin consensus --------------------------------------------


def three_admins() -> ChainState:
    return make_state([(k, p) for k in (ADMIN, ADMIN2, ADMIN3) for p in ("send", "admin")])


def test_rules_high_risk_grant_needs_consensus_of_admins():
    rules = make_rules()  # admin-consensus-admin 0.5 of 3 admins: 2 votes
    state = three_admins()
    fx = apply_tx(state, rules, tx(ADMIN, grant(OTHER, "admin"), time=1), HEIGHT)
    assert [c.kind for c in fx.perm_log] == ["vote"]
    assert not state.holds(OTHER.pubkey_hash, "admin", HEIGHT)
    fx = apply_tx(state, rules, tx(ADMIN, grant(OTHER, "admin"), time=2), HEIGHT)
    assert not state.holds(OTHER.pubkey_hash, "admin", HEIGHT)  # the same admin twice: 1
    fx = apply_tx(state, rules, tx(ADMIN2, grant(OTHER, "admin"), time=3), HEIGHT)
    assert [c.kind for c in fx.perm_log] == ["set"]
    assert state.holds(OTHER.pubkey_hash, "admin", HEIGHT)
    assert (OTHER.pubkey_hash, b"", "admin") not in state.votes


def test_rules_votes_for_different_ranges_do_not_add_up():
    rules = make_rules()
    state = three_admins()
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "mine"), time=1), HEIGHT)
    apply_tx(state, rules, tx(ADMIN2, grant(OTHER, "mine", end=1000), time=2), HEIGHT)
    assert not state.holds(OTHER.pubkey_hash, "mine", HEIGHT)
    apply_tx(state, rules, tx(ADMIN3, grant(OTHER, "mine", end=1000), time=3), HEIGHT)
    assert state.perms[(OTHER.pubkey_hash, b"", "mine")] == (0, 1000)


def test_rules_only_the_latest_vote_of_an_admin_counts():
    rules = make_rules()
    state = three_admins()
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "activate"), time=1), HEIGHT)
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "activate", end=500), time=2), HEIGHT)
    apply_tx(state, rules, tx(ADMIN2, grant(OTHER, "activate"), time=3), HEIGHT)
    assert not state.holds(OTHER.pubkey_hash, "activate", HEIGHT)  # ADMIN changed its mind
    apply_tx(state, rules, tx(ADMIN3, grant(OTHER, "activate"), time=4), HEIGHT)
    assert state.perms[(OTHER.pubkey_hash, b"", "activate")] == (0, NO_END)


def test_rules_high_risk_revoke_also_needs_consensus():
    rules = make_rules()
    state = three_admins()
    apply_tx(state, rules, tx(ADMIN, revoke(ADMIN3, "admin"), time=1), HEIGHT)
    assert state.holds(ADMIN3.pubkey_hash, "admin", HEIGHT)
    apply_tx(state, rules, tx(ADMIN2, revoke(ADMIN3, "admin"), time=2), HEIGHT)
    assert not state.holds(ADMIN3.pubkey_hash, "admin", HEIGHT)


def test_rules_zero_consensus_setup_phase_and_anyone_can_admin_need_one_vote():
    state = three_admins()
    apply_tx(state, make_rules(), tx(ADMIN, grant(OTHER, "create")), HEIGHT)  # 0.0
    assert state.holds(OTHER.pubkey_hash, "create", HEIGHT)
    state = three_admins()
    apply_tx(state, make_rules(), tx(ADMIN, grant(OTHER, "admin")), SETUP - 1)
    assert state.holds(OTHER.pubkey_hash, "admin", SETUP - 1)
    state = three_admins()
    rules = make_rules(anyone_can=frozenset({"admin"}))
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "mine")), HEIGHT)
    assert state.holds(OTHER.pubkey_hash, "mine", HEIGHT)


def test_rules_non_admins_cannot_vote():
    state = three_admins()
    state.perms[(USER.pubkey_hash, b"", "send")] = (0, NO_END)
    state.perms[(USER.pubkey_hash, b"", "activate")] = (0, NO_END)
    with pytest.raises(PermissionDenied, match="admin"):
        apply_tx(state, make_rules(), tx(USER, grant(OTHER, "admin")), HEIGHT)


# -- per-stream permissions ------------------------------------------------------------------


def test_rules_stream_permissions_need_one_stream_admin():
    rules = make_rules()
    state = three_admins()
    for key in (USER, OTHER):
        state.perms[(key.pubkey_hash, b"", "send")] = (0, NO_END)
    state.perms[(ADMIN.pubkey_hash, b"", "create")] = (0, NO_END)
    stream = create_stream(state, rules, "s", closed=True)

    # one vote from the stream's admin suffices, global admin consensus does not apply
    apply_tx(state, rules, tx(ADMIN, grant(USER, "write", stream)), HEIGHT)
    assert state.holds(USER.pubkey_hash, "write", HEIGHT, stream)
    # a global admin who is not the stream's admin cannot change it
    with pytest.raises(PermissionDenied, match="stream"):
        apply_tx(state, rules, tx(ADMIN2, grant(OTHER, "write", stream)), HEIGHT)
    # write does not let USER grant write
    with pytest.raises(PermissionDenied, match="stream"):
        apply_tx(state, rules, tx(USER, grant(OTHER, "write", stream)), HEIGHT)
    # stream activate manages write, not admin or activate
    apply_tx(state, rules, tx(ADMIN, grant(USER, "activate", stream)), HEIGHT)
    apply_tx(state, rules, tx(USER, grant(OTHER, "write", stream)), HEIGHT)
    assert state.holds(OTHER.pubkey_hash, "write", HEIGHT, stream)
    for perm in ("admin", "activate"):
        with pytest.raises(PermissionDenied, match="admin"):
            apply_tx(state, rules, tx(USER, grant(OTHER, perm, stream)), HEIGHT)
    # stream admin manages everything on its stream
    apply_tx(state, rules, tx(ADMIN, grant(OTHER, "admin", stream)), HEIGHT)
    apply_tx(state, rules, tx(OTHER, revoke(USER, "write,activate", stream)), HEIGHT)
    assert not state.holds(USER.pubkey_hash, "write", HEIGHT, stream)


def test_rules_stream_permission_checks_of_the_operation():
    rules = make_rules()
    state = make_state(ADMINS)
    stream = create_stream(state, rules, "s", closed=True)
    with pytest.raises(InvalidTransaction, match="does not exist"):
        apply_tx(state, rules, tx(ADMIN, grant(USER, "write", b"\x42" * 32)), HEIGHT)
    with pytest.raises(InvalidTransaction, match="outside"):
        apply_tx(state, rules, tx(ADMIN, grant(USER, "mine", stream)), HEIGHT)
    with pytest.raises(InvalidTransaction, match="outside"):
        apply_tx(state, rules, tx(ADMIN, grant(USER, "write")), HEIGHT)


# -- the permission log ----------------------------------------------------------------------


def test_rules_replaying_the_permission_log_rebuilds_the_same_state():
    """A restart rebuilds permissions and pending votes from the stored log
    (replay_perm_log); it must agree with the state the live rules produced, including
    when an admin's older vote is confirmed after its newer one."""
    rules = make_rules()
    live = three_admins()
    log = list(replay_seed_log(live))
    for key, change, t in [
        (ADMIN, grant(OTHER, "admin", end=500), 5),
        (ADMIN, grant(OTHER, "admin"), 3),      # older than ADMIN's vote above
        (ADMIN2, grant(OTHER, "mine"), 4),
        (ADMIN3, grant(OTHER, "activate", end=90), 6),
    ]:
        log += apply_tx(live, rules, tx(key, change, time=t), HEIGHT).perm_log
    rebuilt = ChainState(height=live.height)
    replay_perm_log(rebuilt, log)
    assert rebuilt.perms == live.perms
    assert rebuilt.votes == live.votes
    # and the next vote is decided the same way on both
    for state in (live, rebuilt):
        apply_tx(state, rules, tx(ADMIN2, grant(OTHER, "admin"), time=7), HEIGHT)
    assert rebuilt.perms == live.perms


def replay_seed_log(state: ChainState) -> list[PermChange]:
    """The permission log that creates `state`'s grants (as genesis-style 'set' rows)."""
    return [PermChange("set", a, e, p, s, en, a, 0, b"\x00" * 32, 0)
            for (a, e, p), (s, en) in state.perms.items()]
