"""Help texts, categories and parameter counts of every JSON-RPC method (spec §2.1).

Each method is described once as data; its help text (Bitcoin Core style: usage line, blank
line, description, "Arguments:", "Result:") and its (min, max) positional parameter counts are
both derived from that description, so `help` and the wrong-count error can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CATEGORY_ORDER = (
    "Blockchain",
    "Control",
    "Network",
    "Permissions",
    "Streams",
    "Wallet",
    "Mining",
)
"""Headings of `help` without arguments, in this order; any other category follows them."""

_STREAM = "One of: create txid, stream reference, stream name."


@dataclass(frozen=True, slots=True)
class _Arg:
    token: str
    """As written in the usage line, e.g. '"stream-identifier"' or 'verbose'."""
    type: str
    default: str | None
    """None: required; "": optional without a default worth showing; else the default."""
    text: str


@dataclass(frozen=True, slots=True)
class _Method:
    category: str
    description: str
    args: tuple[_Arg, ...]
    result: str


def _req(token: str, type_: str, text: str) -> _Arg:
    return _Arg(token, type_, None, text)


def _opt(token: str, type_: str, default: str, text: str) -> _Arg:
    return _Arg(token, type_, default, text)


def _verbose(text: str = "If true, returns more information.") -> _Arg:
    return _opt("verbose", "boolean", "false", text)


def _count(default: str) -> _Arg:
    return _opt("count", "numeric", default, "The number of entries to return.")


_START = _opt("start", "numeric", "-count",
              "Start from this entry, 0 based; if negative, counted from the end "
              "(the default gives the last `count` entries).")
_LOCAL_ORDERING = _opt("local-ordering", "boolean", "false",
                       "If true, entries appear in the order this node processed them; "
                       "if false, in the order they appear in the blockchain.")
_STREAM_ARG = _req('"stream-identifier"', "string", _STREAM)
_FROM = _req('"from-address"', "string", "Address used for signing; must be in this wallet.")
_NATIVE = _opt("native-amount", "numeric", "0",
               "Native currency sent to each address (0 on chains without currency).")
_COMMENT = _opt('"comment"', "string", "", "A comment stored in the local wallet only.")
_COMMENT_TO = _opt('"comment-to"', "string", "",
                   "The name of the recipient, stored in the local wallet only.")
_PERMISSIONS = _req('"permission(s)"', "string",
                    "Comma-delimited global permissions: connect, send, receive, issue, create, "
                    "mine, activate, admin, low1-3, high1-3; or per stream: "
                    '"stream-identifier.write,activate,admin".')
_BLOCK_SET = _req("block-set-identifier", "string|numeric|array|object",
                  'A height, a hash, a "from-to" range of heights, a negative number for the '
                  "last blocks, a comma-delimited list, an array of these, or "
                  '{"starttime": n, "endtime": n}.')
_KEY_OR_KEYS = _req('"key"|keys', "string|array",
                    'Item key (up to 256 bytes, not "*"), or a non-empty array of keys.')
_DATA = _req("data", "string|object",
             'Hex data, {"text": "..."}, {"json": ...} or {"cache": "identifier"}.')
_OPTIONS = _opt('"options"', "string", '""', '"offchain" stores the data off-chain.')
_ITEMS = _req("items", "array",
              'Array of {"for": "stream-identifier" (optional), "key"|"keys", "data", '
              '"options" (optional)} objects, all published in one transaction.')
_TASKS = _req('"tasks"', "string", "Comma-delimited: incoming, mining, offchain.")
_ITEM_RESULT = "(object) A stream item: publishers, keys, offchain, available, data, " \
    "confirmations, blocktime (when confirmed), txid; more fields when verbose."
_ITEMS_RESULT = "(array) Stream items, oldest first, each as returned by getstreamitem."


_METHODS: dict[str, _Method] = {
    # == Control ==
    "getinfo": _Method(
        "Control",
        "Returns general information about this node and blockchain.",
        (),
        "(object) version, nodeversion, edition, protocolversion, chainname, description, "
        "protocol, port, setupblocks, nodeaddress, burnaddress, incomingpaused, miningpaused, "
        "offchainpaused, walletversion, balance, walletdbversion, reindex, blocks, "
        "chainrewards, assets, streams, timeoffset, connections, proxy, difficulty, testnet, "
        "keypoololdest, keypoolsize, paytxfee, relayfee, errors, finaldepth.",
    ),
    "getblockchainparams": _Method(
        "Control",
        "Returns the parameters of this blockchain.",
        (
            _opt("display-names", "boolean", "true",
                 'Use hyphenated display names ("mining-diversity"); false gives the compact '
                 'names ("miningdiversity").'),
            _opt("with-upgrades", "boolean", "true",
                 "Show values after upgrades; false gives the genesis values."),
        ),
        "(object) Every blockchain parameter and its effective value.",
    ),
    "getruntimeparams": _Method(
        "Control",
        "Returns a selection of this node's runtime parameters.",
        (),
        "(object) Runtime parameter names and values.",
    ),
    "setruntimeparam": _Method(
        "Control",
        "Sets a runtime parameter of this node while it runs.",
        (
            _req('"parameter-name"', "string",
                 "One of: miningrequirespeers, mineemptyblocks, mineblocksondemand, "
                 "mineemptyrounds, miningturnover, lockadminminerounds, maxshowndata, "
                 "maxqueryscanitems, bantx, lockblock, autosubscribe, handshakelocal, "
                 "hideknownopdrops, acceptfiltertimeout, sendfiltertimeout, "
                 "lockinlinemetadata."),
            _req("parameter-value", "any",
                 'The new value; booleans also accept "true", "false", 1 and 0.'),
        ),
        "null",
    ),
    "help": _Method(
        "Control",
        "Lists all commands, or gives detailed help for one command.",
        (_opt('"command"', "string", "", "The command to get help on."),),
        "(string) The help text.",
    ),
    "stop": _Method(
        "Control",
        "Stops the chainmill server.",
        (),
        '(string) "chainmill server stopping"',
    ),
    "getinitstatus": _Method(
        "Control",
        "Returns the initialization status of this node; allowed while it starts up.",
        (),
        "(object) version, nodeversion, initialized; while a joining node connects also "
        "connecttime, connectaddress, connectport, handshakelocal, lasterror.",
    ),
    "pause": _Method(
        "Control",
        "Pauses the given tasks of this node.",
        (_TASKS,),
        '(string) "Paused"',
    ),
    "resume": _Method(
        "Control",
        "Resumes the given tasks of this node.",
        (_TASKS,),
        '(string) "Resumed"',
    ),
    # == Blockchain ==
    "getblockcount": _Method(
        "Blockchain",
        "Returns the height of the tip of the active chain (the genesis block has height 0).",
        (),
        "(numeric) The tip height.",
    ),
    "getbestblockhash": _Method(
        "Blockchain",
        "Returns the hash of the tip of the active chain.",
        (),
        '"hex" (string) The block hash.',
    ),
    "getblockhash": _Method(
        "Blockchain",
        "Returns the hash of the block at a height of the active chain.",
        (_req("height", "numeric", "The height."),),
        '"hex" (string) The block hash.',
    ),
    "getblock": _Method(
        "Blockchain",
        "Returns a block by hash or height.",
        (
            _req('"hash"|height', "string|numeric",
                 "The block hash, or its height (a number or a short numeric string)."),
            _opt("verbose", "numeric|boolean", "1",
                 "0/false: serialized block as hex; 1/true: object with txids; 2 or 3: with "
                 "each transaction's hex as well; 4: with fully decoded transactions."),
        ),
        '"hex" (string) for verbose=0, else (object) hash, miner, confirmations, size, height, '
        "version, merkleroot, tx, time, nonce, bits, difficulty, previousblockhash, "
        "nextblockhash.",
    ),
    "getlastblockinfo": _Method(
        "Blockchain",
        "Returns information about the tip block, or an earlier one.",
        (_opt("skip", "numeric", "0", "The number of blocks back from the tip."),),
        "(object) hash, height, time, txcount, miner.",
    ),
    "listblocks": _Method(
        "Blockchain",
        "Returns summaries of a set of blocks.",
        (_BLOCK_SET, _verbose()),
        "(array) Block summaries: hash, height, miner, confirmations, time, txcount, ...",
    ),
    "getrawtransaction": _Method(
        "Blockchain",
        "Returns a transaction of the chain or the mempool.",
        (
            _req('"txid"', "string", "The transaction id."),
            _opt("verbose", "numeric|boolean", "0",
                 "0/false: serialized transaction as hex; non-zero/true: decoded object."),
        ),
        '"hex" (string) for verbose=0, else (object) hex, txid, version, locktime, vin, vout '
        "(with items, permissions and data per output), blockhash, confirmations, time, "
        "blocktime.",
    ),
    "getmempoolinfo": _Method(
        "Blockchain",
        "Returns the state of the memory pool.",
        (),
        "(object) size (transaction count), bytes (total size).",
    ),
    "getrawmempool": _Method(
        "Blockchain",
        "Returns the txids in the memory pool.",
        (_verbose("If true, returns an object keyed by txid with details of each transaction."),),
        "(array) txids, or (object) txid -> {size, fee, time, height, startingpriority, "
        "currentpriority, depends} when verbose.",
    ),
    "getblockchaininfo": _Method(
        "Blockchain",
        "Returns the state of the blockchain.",
        (),
        "(object) chain, chainname, description, protocol, setupblocks, reindex, blocks, "
        "headers, bestblockhash, difficulty, verificationprogress, chainwork, chainrewards, "
        "finaldepth.",
    ),
    # == Streams ==
    "gettxoutdata": _Method(
        "Streams",
        "Returns the data stored in a transaction output.",
        (
            _req('"txid"', "string", "The transaction id."),
            _req("vout", "numeric", "The output index."),
            _opt("count-bytes", "numeric", "all", "The number of bytes to return."),
            _opt("start-byte", "numeric", "0", "The first byte to return."),
        ),
        '"hex" (string) for binary data, or (object) {"text": ...} / {"json": ...}.',
    ),
    "create": _Method(
        "Streams",
        "Creates a stream, signed by a wallet address holding the create permission.",
        (
            _req('"stream"', "string", 'The entity type; must be "stream".'),
            _req('"stream-name"', "string", 'The stream name ("" for a nameless stream).'),
            _req("open|restrictions", "boolean|object",
                 'true: anyone with send may publish; or {"restrict": '
                 '"write,read,onchain,offchain", "salted": bool}.'),
            _opt("custom-fields", "object", "", "Custom fields, returned as details."),
        ),
        '"txid" (string) The creation transaction id.',
    ),
    "createfrom": _Method(
        "Streams",
        "Creates a stream, signed by the given wallet address.",
        (
            _FROM,
            _req('"stream"', "string", 'The entity type; must be "stream".'),
            _req('"stream-name"', "string", 'The stream name ("" for a nameless stream).'),
            _req("open|restrictions", "boolean|object",
                 'true: anyone with send may publish; or {"restrict": '
                 '"write,read,onchain,offchain", "salted": bool}.'),
            _opt("custom-fields", "object", "", "Custom fields, returned as details."),
        ),
        '"txid" (string) The creation transaction id.',
    ),
    "liststreams": _Method(
        "Streams",
        "Returns streams, in creation order.",
        (
            _opt("stream-identifier(s)", "string|array", "*",
                 'A stream identifier, a comma-delimited list or array of them, or "*" for all.'),
            _verbose(),
            _count("MAX"),
            _START,
        ),
        "(array) Stream objects: name, createtxid, streamref, restrict, details, subscribed, "
        "and when subscribed synchronized, items, confirmed, keys, publishers.",
    ),
    "getstreaminfo": _Method(
        "Streams",
        "Returns information about one stream.",
        (_STREAM_ARG, _verbose()),
        "(object) A stream object as returned by liststreams.",
    ),
    "publish": _Method(
        "Streams",
        "Publishes an item to a stream, signed by a wallet address allowed to write to it.",
        (_STREAM_ARG, _KEY_OR_KEYS, _DATA, _OPTIONS),
        '"txid" (string) The transaction id.',
    ),
    "publishfrom": _Method(
        "Streams",
        "Publishes an item to a stream, signed by the given wallet address.",
        (_FROM, _STREAM_ARG, _KEY_OR_KEYS, _DATA, _OPTIONS),
        '"txid" (string) The transaction id.',
    ),
    "publishmulti": _Method(
        "Streams",
        "Publishes several items in one transaction.",
        (_STREAM_ARG, _ITEMS, _OPTIONS),
        '"txid" (string) The transaction id.',
    ),
    "publishmultifrom": _Method(
        "Streams",
        "Publishes several items in one transaction, signed by the given wallet address.",
        (_FROM, _STREAM_ARG, _ITEMS, _OPTIONS),
        '"txid" (string) The transaction id.',
    ),
    "subscribe": _Method(
        "Streams",
        "Subscribes to streams, so that their items are indexed and can be read.",
        (
            _req("stream-identifier(s)", "string|array",
                 "A stream identifier, or an array of them."),
            _opt("rescan", "boolean", "true",
                 "If true, index existing items before returning; if false, only new items."),
            _opt('"parameters"', "string", "", "Index selection (not supported; ignored)."),
        ),
        "null",
    ),
    "unsubscribe": _Method(
        "Streams",
        "Unsubscribes from streams.",
        (
            _req("stream-identifier(s)", "string|array",
                 "A stream identifier, or an array of them."),
            _opt("purge", "boolean", "false", "If true, delete the streams' off-chain data."),
        ),
        "null",
    ),
    "liststreamitems": _Method(
        "Streams",
        "Returns the items of a subscribed stream.",
        (_STREAM_ARG, _verbose(), _count("10"), _START, _LOCAL_ORDERING),
        _ITEMS_RESULT,
    ),
    "liststreamkeys": _Method(
        "Streams",
        "Returns summaries of the keys of a subscribed stream.",
        (
            _STREAM_ARG,
            _opt("key(s)", "string|array", "*",
                 'A key, a comma-delimited list or array of keys, or "*" for all.'),
            _verbose("If true, adds the first and last item of each key."),
            _count("MAX"),
            _START,
            _LOCAL_ORDERING,
        ),
        "(array) {key, items, confirmed} objects; verbose adds first and last.",
    ),
    "liststreamkeyitems": _Method(
        "Streams",
        "Returns the items of a subscribed stream that have a key.",
        (
            _STREAM_ARG,
            _req('"key"', "string", 'The key ("*" for all items).'),
            _verbose(),
            _count("10"),
            _START,
            _LOCAL_ORDERING,
        ),
        _ITEMS_RESULT,
    ),
    "liststreampublishers": _Method(
        "Streams",
        "Returns summaries of the publishers of a subscribed stream.",
        (
            _STREAM_ARG,
            _opt("address(es)", "string|array", "*",
                 'An address, a comma-delimited list or array of addresses, or "*" for all.'),
            _verbose("If true, adds the first and last item of each publisher."),
            _count("MAX"),
            _START,
            _LOCAL_ORDERING,
        ),
        "(array) {publisher, items, confirmed} objects; verbose adds first and last.",
    ),
    "liststreampublisheritems": _Method(
        "Streams",
        "Returns the items of a subscribed stream signed by an address.",
        (
            _STREAM_ARG,
            _req('"address"', "string", 'The publisher address ("*" for all items).'),
            _verbose(),
            _count("10"),
            _START,
            _LOCAL_ORDERING,
        ),
        _ITEMS_RESULT,
    ),
    "getstreamitem": _Method(
        "Streams",
        "Returns the item of a subscribed stream published in a transaction.",
        (_STREAM_ARG, _req('"txid"', "string", "The transaction id."), _verbose()),
        _ITEM_RESULT,
    ),
    "liststreamtxitems": _Method(
        "Streams",
        "Returns the items of a subscribed stream published in the given transactions.",
        (
            _STREAM_ARG,
            _req("txid(s)", "string|array",
                 "A transaction id, a comma-delimited list or an array of them."),
            _verbose(),
        ),
        _ITEMS_RESULT,
    ),
    "liststreamqueryitems": _Method(
        "Streams",
        "Returns the items of a subscribed stream matching all conditions of a query.",
        (
            _STREAM_ARG,
            _req("query", "object",
                 '{"key": "..."} or {"keys": [...]} and/or {"publisher": "..."} or '
                 '{"publishers": [...]}.'),
            _verbose(),
        ),
        _ITEMS_RESULT,
    ),
    "liststreamblockitems": _Method(
        "Streams",
        "Returns the items of a subscribed stream confirmed in a set of blocks.",
        (_STREAM_ARG, _BLOCK_SET, _verbose(), _count("MAX"), _START),
        _ITEMS_RESULT,
    ),
    # == Permissions ==
    "listpermissions": _Method(
        "Permissions",
        "Returns the explicitly granted, currently effective permissions.",
        (
            _opt('"permission(s)"', "string", "*",
                 'Comma-delimited global permissions, "*" for all, or '
                 '"stream-identifier.*" / "stream-identifier.write,admin".'),
            _opt("address(es)", "string|array", "*",
                 'A comma-delimited list or array of addresses, or "*" for all.'),
            _verbose("If true, adds admins and pending changes."),
        ),
        "(array) {address, for, type, startblock, endblock} objects; verbose adds admins and "
        "pending.",
    ),
    "verifypermission": _Method(
        "Permissions",
        "Checks whether an address holds a global permission at the tip.",
        (
            _req('"address"', "string", "The address."),
            _req('"permission"', "string", "A global permission name."),
        ),
        "(boolean) true if the address holds the permission.",
    ),
    "grant": _Method(
        "Permissions",
        "Grants permissions, signed by a wallet address with the authority to do so.",
        (
            _req('"address(es)"', "string", "Comma-delimited addresses."),
            _PERMISSIONS,
            _NATIVE,
            _opt("start-block", "numeric", "0", "First block of the permission (inclusive)."),
            _opt("end-block", "numeric", "4294967295",
                 "Block where the permission ends (exclusive); -1 means open-ended."),
            _COMMENT,
            _COMMENT_TO,
        ),
        '"txid" (string) The transaction id (a vote when admin consensus needs more admins).',
    ),
    "grantfrom": _Method(
        "Permissions",
        "Grants permissions, signed by the given wallet address.",
        (
            _FROM,
            _req('"to-address(es)"', "string", "Comma-delimited addresses."),
            _PERMISSIONS,
            _NATIVE,
            _opt("start-block", "numeric", "0", "First block of the permission (inclusive)."),
            _opt("end-block", "numeric", "4294967295",
                 "Block where the permission ends (exclusive); -1 means open-ended."),
            _COMMENT,
            _COMMENT_TO,
        ),
        '"txid" (string) The transaction id (a vote when admin consensus needs more admins).',
    ),
    "revoke": _Method(
        "Permissions",
        "Revokes permissions, signed by a wallet address with the authority to do so.",
        (
            _req('"address(es)"', "string", "Comma-delimited addresses."),
            _PERMISSIONS,
            _NATIVE,
            _COMMENT,
            _COMMENT_TO,
        ),
        '"txid" (string) The transaction id (a vote when admin consensus needs more admins).',
    ),
    "revokefrom": _Method(
        "Permissions",
        "Revokes permissions, signed by the given wallet address.",
        (
            _FROM,
            _req('"to-address(es)"', "string", "Comma-delimited addresses."),
            _PERMISSIONS,
            _NATIVE,
            _COMMENT,
            _COMMENT_TO,
        ),
        '"txid" (string) The transaction id (a vote when admin consensus needs more admins).',
    ),
    # == Wallet ==
    "getnewaddress": _Method(
        "Wallet",
        "Creates a new key, stores it in the wallet and returns its address. The address has "
        "no permissions until they are granted.",
        (_opt('"account"', "string", '""', "Deprecated label; ignored."),),
        '"address" (string) The new address.',
    ),
    "getaddresses": _Method(
        "Wallet",
        "Returns the addresses of this wallet.",
        (_verbose("If true, returns address objects instead of strings."),),
        "(array) Address strings, or address objects when verbose.",
    ),
    "validateaddress": _Method(
        "Wallet",
        "Returns information about an address, public key or private key.",
        (_req('"address"|"pubkey"|"privkey"', "string",
              "An address, a hex public key or a WIF private key."),),
        "(object) {isvalid: false}, or isvalid, address, ismine, pubkey, iscompressed, ...",
    ),
    "getwalletinfo": _Method(
        "Wallet",
        "Returns the state of the wallet.",
        (),
        "(object) walletversion, balance, walletdbversion, txcount, utxocount, keypoololdest, "
        "keypoolsize, unlocked_until (only when encrypted).",
    ),
    "createkeypairs": _Method(
        "Wallet",
        "Creates key pairs without storing them in the wallet.",
        (_opt("count", "numeric", "1", "The number of key pairs."),),
        "(array) {address, pubkey, privkey} objects.",
    ),
    # -- wallet transactions, keys and balances (MultiChain 2.3, issue 11 item 1) --
    "getwallettransaction": _Method(
        "Wallet",
        "Returns a transaction of this wallet in MultiChain's wallet-transaction shape.",
        (_req('"txid"', "string", "The transaction id."),
         _opt("include-watch-only", "boolean", "false", "Also consider watch-only addresses."),
         _verbose("If true, also returns vin and vout.")),
        "(object) balance, myaddresses, addresses, permissions, items, data, confirmations, "
        "blockhash, blockindex, blocktime, txid, valid, time, timereceived.",
    ),
    "listwallettransactions": _Method(
        "Wallet",
        "Lists the transactions of this wallet, oldest first.",
        (_count("10"), _opt("skip", "numeric", "0", "Skip this many of the newest."),
         _opt("include-watch-only", "boolean", "false", "Also list watch-only addresses."),
         _verbose("If true, also returns vin and vout.")),
        "(array) Wallet transactions as returned by getwallettransaction.",
    ),
    "listaddresstransactions": _Method(
        "Wallet",
        "Lists the transactions of one wallet or watch-only address, oldest first.",
        (_req('"address"', "string", "The address."), _count("10"),
         _opt("skip", "numeric", "0", "Skip this many of the newest."),
         _verbose("If true, also returns vin and vout.")),
        "(array) Wallet transactions as returned by getwallettransaction.",
    ),
    "getaddresstransaction": _Method(
        "Wallet",
        "Returns a transaction as it concerns one wallet or watch-only address.",
        (_req('"address"', "string", "The address."),
         _req('"txid"', "string", "The transaction id."),
         _verbose("If true, also returns vin and vout.")),
        "(object) A wallet transaction as returned by getwallettransaction.",
    ),
    "listaddresses": _Method(
        "Wallet",
        "Lists the addresses of this wallet, including watch-only ones.",
        (_opt('"address(es)"', "string|array", '"*"', "Addresses to list."),
         _verbose(), _count("MAX"), _START),
        "(array) {address, ismine} objects; more fields when verbose.",
    ),
    "importaddress": _Method(
        "Wallet",
        "Adds addresses or public keys to the wallet as watch-only.",
        (_req('"address(es)"', "string|array", "Address, public key, comma-delimited list or "
              "array of them."),
         _opt('"label"', "string", '""', "Ignored (no accounts)."),
         _opt("rescan", "boolean", "true", "Their past transactions are listed either way.")),
        "null",
    ),
    "importprivkey": _Method(
        "Wallet",
        "Adds private keys (WIF) to the wallet.",
        (_req('"privkey(s)"', "string|array", "WIF key, comma-delimited list or array."),
         _opt('"label"', "string", '""', "Ignored (no accounts)."),
         _opt("rescan", "boolean", "true", "Their past transactions are listed either way.")),
        "null",
    ),
    "dumpprivkey": _Method(
        "Wallet",
        "Returns the private key (WIF) of a wallet address.",
        (_req('"address"', "string", "A wallet address."),),
        '"privkey" (string) The WIF private key.',
    ),
    "signmessage": _Method(
        "Wallet",
        "Signs a message with the key of an address (Bitcoin message format).",
        (_req('"address|privkey"', "string", "A wallet address or a WIF private key."),
         _req('"message"', "string", "The message.")),
        '"signature" (string) Compact recoverable signature, base64.',
    ),
    "verifymessage": _Method(
        "Wallet",
        "Verifies a message signature made by signmessage.",
        (_req('"address"', "string", "The signing address."),
         _req('"signature"', "string", "Base64 signature from signmessage."),
         _req('"message"', "string", "The message.")),
        "true|false (boolean) Whether the signature is valid.",
    ),
    "getmultibalances": _Method(
        "Wallet",
        "Balances of wallet addresses (empty: this chain has no native currency or assets).",
        (_opt('"address(es)"', "string|array", '"*"', "Addresses."),
         _opt('"asset(s)"', "string|array", '"*"', "Assets."),
         _opt("minconf", "numeric", "1", "Minimum confirmations."),
         _opt("includeWatchOnly", "boolean", "false", "Include watch-only addresses."),
         _opt("includeLocked", "boolean", "false", "Include locked outputs.")),
        '(object) {"total": []}',
    ),
    "gettotalbalances": _Method(
        "Wallet",
        "Total balances of the wallet (empty: no native currency or assets).",
        (_opt("minconf", "numeric", "1", "Minimum confirmations."),
         _opt("includeWatchOnly", "boolean", "false", "Include watch-only addresses."),
         _opt("includeLocked", "boolean", "false", "Include locked outputs.")),
        "(array) Empty.",
    ),
    "getaddressbalances": _Method(
        "Wallet",
        "Balances of one address (empty: no native currency or assets).",
        (_req('"address"', "string", "The address."),
         _opt("minconf", "numeric", "1", "Minimum confirmations."),
         _opt("includeLocked", "boolean", "false", "Include locked outputs.")),
        "(array) Empty.",
    ),
    "listunspent": _Method(
        "Wallet",
        "Unspent outputs of the wallet (none: chainmill has no UTXOs).",
        (_opt("minconf", "numeric", "1", "Minimum confirmations."),
         _opt("maxconf", "numeric", "9999999", "Maximum confirmations."),
         _opt("addresses", "array", "", "Addresses to filter by.")),
        "(array) Empty.",
    ),
    "getbalance": _Method(
        "Wallet",
        "The wallet's native currency balance (0: no native currency).",
        (_opt('"account"', "string", '""', "Ignored."),
         _opt("minconf", "numeric", "1", "Minimum confirmations."),
         _opt("includeWatchonly", "boolean", "false", "Include watch-only addresses.")),
        "(numeric) 0.0",
    ),
    "decoderawtransaction": _Method(
        "Blockchain",
        "Decodes a serialized chainmill transaction without submitting it.",
        (_req('"hex"', "string", "The transaction's hex."),),
        "(object) The transaction as getrawtransaction verbose shows it.",
    ),
    "sendrawtransaction": _Method(
        "Blockchain",
        "Submits a serialized, signed chainmill transaction.",
        (_req('"hex"', "string", "The transaction's hex."),
         _opt("allowhighfees", "boolean", "false", "Ignored (no fees).")),
        '"txid" (string) The transaction id.',
    ),
    "getchaintips": _Method(
        "Blockchain",
        "Returns the tips of the known block tree.",
        (),
        "(array) {height, hash, branchlen, status} objects.",
    ),
    "gettxoutsetinfo": _Method(
        "Blockchain",
        "Statistics of the unspent output set (empty: chainmill has no UTXOs).",
        (),
        "(object) height, bestblock, transactions, txouts, bytes_serialized, "
        "hash_serialized, total_amount.",
    ),
    "getchunkqueueinfo": _Method(
        "Blockchain",
        "Off-chain chunks waiting to be retrieved (none: items are on-chain).",
        (),
        "(object) {chunks, bytes}",
    ),
    "getchunkqueuetotals": _Method(
        "Blockchain",
        "Totals of off-chain chunk retrieval (zero: items are on-chain).",
        (),
        "(object) {chunks, bytes}",
    ),
    "ping": _Method(
        "Network",
        "Requests a ping of every peer (pingtime in getpeerinfo).",
        (),
        "null",
    ),
    "getnettotals": _Method(
        "Network",
        "Returns the bytes sent and received over the P2P network.",
        (),
        "(object) totalbytesrecv, totalbytessent, timemillis.",
    ),
    # == Network ==
    "getpeerinfo": _Method(
        "Network",
        "Returns information about each connected peer.",
        (),
        "(array) Peer objects: id, addr, addrlocal, services, lastsend, lastrecv, bytessent, "
        "bytesrecv, conntime, pingtime, version, subver, handshakelocal, handshake, inbound, "
        "startingheight, banscore, synced_headers, synced_blocks, inflight.",
    ),
    "disconnectnode": _Method(
        "Network",
        "Closes the connection to a peer (chainmill extension taken from Bitcoin Core). An "
        "added node is dialled again unless it is also removed with addnode.",
        (_req('"node"', "string", 'The peer as "ip:port" (listening or connected address) '
              "or its handshake address."),),
        "null",
    ),
    "addnode": _Method(
        "Network",
        "Adds a node to, or removes it from, the list of peers to connect to, or tries once.",
        (
            _req('"node"', "string", 'The peer as "ip:port".'),
            _req('"add"|"remove"|"onetry"', "string", "The action."),
        ),
        "null",
    ),
    "getaddednodeinfo": _Method(
        "Network",
        "Returns information about the nodes added with addnode.",
        (
            _req("dns", "boolean", "If false, only the added node names are returned."),
            _opt('"node"', "string", "", "Return information about this node only."),
        ),
        "(array) {addednode, connected, addresses: [{address, connected}]} objects.",
    ),
    "getconnectioncount": _Method(
        "Network",
        "Returns the number of connected peers.",
        (),
        "(numeric) The connection count.",
    ),
    "getnetworkinfo": _Method(
        "Network",
        "Returns the state of the P2P network.",
        (),
        "(object) version, subversion, protocolversion, localservices, timeoffset, "
        "connections, networks, relayfee, localaddresses.",
    ),
    # == Mining ==
    "getmininginfo": _Method(
        "Mining",
        "Returns the state of block production.",
        (),
        "(object) blocks, currentblocksize, currentblocktx, difficulty, errors, generate, "
        "genproclimit, networkhashps, hashespersec, pooledtx, testnet, chain; chainmill "
        "extensions: nextblock, nextminers (the addresses that may sign the next block, in "
        "the order they try: the first one's turn), miningturnover.",
    ),
}


def _usage(name: str, args: tuple[_Arg, ...]) -> str:
    required = [a.token for a in args if a.default is None]
    optional = [a.token for a in args if a.default is not None]
    parts = [name, *required]
    if optional:
        parts.append("( " + " ".join(optional) + " )")
    return " ".join(parts)


def _render(name: str, method: _Method) -> str:
    lines = [_usage(name, method.args), "", method.description, ""]
    if method.args:
        lines.append("Arguments:")
        width = max(len(a.token) for a in method.args) + 4
        for i, arg in enumerate(method.args, 1):
            if arg.default is None:
                kind = f"{arg.type}, required"
            elif arg.default == "":
                kind = f"{arg.type}, optional"
            else:
                kind = f"{arg.type}, optional, default={arg.default}"
            lines.append(f"{i}. {arg.token:<{width}}({kind}) {arg.text}")
        lines.append("")
    lines.append("Result:")
    lines.append(method.result)
    return "\n".join(lines)


HELP: dict[str, str] = {name: _render(name, m) for name, m in _METHODS.items()}
"""The full help text of each method."""

CATEGORY: dict[str, str] = {name: m.category for name, m in _METHODS.items()}
"""The `help` heading of each method, without the `== ==`."""

PARAM_COUNTS: dict[str, tuple[int, int]] = {
    name: (sum(1 for a in m.args if a.default is None), len(m.args))
    for name, m in _METHODS.items()
}
"""(min, max) number of positional parameters of each method."""


def usage_line(name: str, help_of: Mapping[str, str] = HELP) -> str:
    """The first line of a method's help text: `name param1 ( param2 )`."""
    return help_of[name].split("\n", 1)[0]


def help_overview(
    names: Iterable[str],
    category_of: Mapping[str, str] = CATEGORY,
    help_of: Mapping[str, str] = HELP,
) -> str:
    """`help` without arguments: usage lines grouped under `== Category ==` headings."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(category_of.get(name, "Other"), []).append(name)
    order = [c for c in CATEGORY_ORDER if c in groups]
    order += sorted(c for c in groups if c not in CATEGORY_ORDER)
    blocks = []
    for category in order:
        lines = [f"== {category} =="]
        lines += [usage_line(n, help_of) for n in sorted(groups[category])]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def unknown_command(name: str) -> str:
    """`help X` for a command that does not exist (a string result, not an error)."""
    return f"help: unknown command: {name}"
