"""Help texts: one per method of spec §2.1, Bitcoin Core layout, counts consistent with usage."""

import re

import pytest

from node.rpc.help import (
    CATEGORY,
    CATEGORY_ORDER,
    HELP,
    PARAM_COUNTS,
    help_overview,
    unknown_command,
    usage_line,
)

SPEC_METHODS = """
getinfo getblockchainparams getruntimeparams setruntimeparam help stop getblockcount
getbestblockhash getblockhash getblock getlastblockinfo listblocks getrawtransaction
gettxoutdata getmempoolinfo getrawmempool getnewaddress getaddresses validateaddress
getwalletinfo listpermissions verifypermission grant grantfrom revoke revokefrom create
createfrom liststreams getstreaminfo publish publishfrom publishmulti publishmultifrom
subscribe unsubscribe liststreamitems liststreamkeys liststreamkeyitems liststreampublishers
liststreampublisheritems getstreamitem liststreamtxitems liststreamqueryitems
liststreamblockitems getpeerinfo addnode getaddednodeinfo getconnectioncount getnetworkinfo
getblockchaininfo getmininginfo pause resume getinitstatus createkeypairs
disconnectnode
getwallettransaction listwallettransactions listaddresstransactions getaddresstransaction
listaddresses importaddress importprivkey dumpprivkey signmessage verifymessage
getmultibalances gettotalbalances getaddressbalances listunspent getbalance
decoderawtransaction sendrawtransaction getchaintips gettxoutsetinfo getchunkqueueinfo
getchunkqueuetotals ping getnettotals
""".split()


def test_rpc_help_covers_exactly_the_spec_methods():
    assert set(HELP) == set(SPEC_METHODS)
    assert set(CATEGORY) == set(SPEC_METHODS)
    assert set(PARAM_COUNTS) == set(SPEC_METHODS)
    assert set(CATEGORY.values()) <= set(CATEGORY_ORDER)


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("publish", (3, 4)),
        ("publishfrom", (4, 5)),
        ("liststreamitems", (1, 5)),
        ("liststreamkeys", (1, 6)),
        ("liststreams", (0, 4)),
        ("getblock", (1, 2)),
        ("grant", (2, 7)),
        ("grantfrom", (3, 8)),
        ("revoke", (2, 5)),
        ("create", (3, 4)),
        ("getinfo", (0, 0)),
        ("help", (0, 1)),
        ("setruntimeparam", (2, 2)),
        ("gettxoutdata", (2, 4)),
        ("addnode", (2, 2)),
        ("createkeypairs", (0, 1)),
    ],
)
def test_rpc_help_param_counts_follow_spec_table(name, counts):
    assert PARAM_COUNTS[name] == counts


@pytest.mark.parametrize("name", SPEC_METHODS)
def test_rpc_help_text_has_bitcoin_core_layout(name):
    text = HELP[name]
    lines = text.split("\n")
    assert lines[0].split()[0] == name
    assert lines[1] == ""
    assert lines[2]  # a description
    assert "\nResult:\n" in text
    min_params, max_params = PARAM_COUNTS[name]
    numbered = re.findall(r"^(\d+)\. ", text, flags=re.MULTILINE)
    assert [int(n) for n in numbered] == list(range(1, max_params + 1))
    if max_params:
        assert "\nArguments:\n" in text
    assert text.count(", required)") == min_params
    # The usage line shows optional parameters in one "( ... )" group, like Bitcoin Core.
    assert ("(" in lines[0]) == (max_params > min_params)


def test_rpc_help_usage_lines():
    assert usage_line("getinfo") == "getinfo"
    assert usage_line("liststreamitems") == (
        'liststreamitems "stream-identifier" ( verbose count start local-ordering )')
    assert usage_line("publish") == 'publish "stream-identifier" "key"|keys data ( "options" )'
    assert usage_line("help") == 'help ( "command" )'


def test_rpc_help_stop_mentions_chainmill_result():
    assert '"chainmill server stopping"' in HELP["stop"]


def test_rpc_help_overview_groups_by_category_in_order():
    text = help_overview(SPEC_METHODS)
    headings = re.findall(r"^== (\w+) ==$", text, flags=re.MULTILINE)
    assert headings == list(CATEGORY_ORDER)
    blocks = text.split("\n\n")
    assert len(blocks) == len(CATEGORY_ORDER)
    for block in blocks:
        heading, *usages = block.split("\n")
        category = heading.strip("= ")
        names = [u.split()[0] for u in usages]
        assert names == sorted(names)
        assert all(CATEGORY[n] == category for n in names)
    assert sum(len(b.split("\n")) - 1 for b in blocks) == len(SPEC_METHODS)


def test_rpc_help_overview_of_a_subset_and_unknown_categories():
    text = help_overview(["getinfo", "custom"], {"getinfo": "Control", "custom": "Extra"},
                         {"getinfo": HELP["getinfo"], "custom": "custom x\n\nCustom."})
    assert text == "== Control ==\ngetinfo\n\n== Extra ==\ncustom x"


def test_rpc_help_unknown_command_is_a_string():
    assert unknown_command("frobnicate") == "help: unknown command: frobnicate"
