"use strict";
// Drives a chainmill node through the npm MultiChain client `multichain-node`, with the
// parameter lists (and defaults: nulls, start = -count, format = true) that the client
// itself builds. Any mismatch throws, so the process exits non-zero; on success the last
// line of stdout is a JSON summary the Python test checks too.
//
// Connection from the environment: MC_PORT, MC_USER, MC_PASS, MC_CHAIN, MC_PEER_ADDRESS
// (the peer node's handshake address), MC_TIMEOUT (seconds to wait for a confirmation).

const assert = require("node:assert/strict");
const multichain = require("multichain-node");

const env = (name) => {
    const value = process.env[name];
    if (value === undefined) {
        throw new Error(`${name} is not set`);
    }
    return value;
};

const mc = multichain({
    host: "127.0.0.1",
    port: Number(env("MC_PORT")),
    user: env("MC_USER"),
    pass: env("MC_PASS"),
});
const timeoutMs = Number(env("MC_TIMEOUT")) * 1000;
const called = new Set();

async function call(name, args) {
    called.add(name.toLowerCase());
    return mc[name](args);
}

async function confirmed(txid) {
    // A condition wait, not a timed assertion: poll until the wallet sees a confirmation.
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const tx = await mc.getWalletTransaction({txid});
        if (tx.confirmations >= 1) {
            return tx;
        }
        if (Date.now() > deadline) {
            throw new Error(`${txid} not confirmed within ${timeoutMs} ms`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

async function main() {
    const info = await call("getInfo");
    assert.equal(info.chainname, env("MC_CHAIN"));
    assert.equal(typeof info.blocks, "number");

    const params = await call("getBlockchainParams");  // display-names, with-upgrades: true
    assert.equal(params["chain-name"], env("MC_CHAIN"));
    assert.equal(params["minimum-block-txs"], 0);
    const runtime = await call("getRuntimeParams");
    assert.equal(typeof runtime.maxshowndata, "number");

    const me = (await call("getAddresses"))[0];
    const user = await call("getNewAddress");
    assert.equal((await call("validateAddress", {address: user})).isvalid, true);

    // grant sends native-amount, start-block, end-block, comment, comment-to as nulls.
    const granted = await call("grant", {addresses: user, permissions: "send"});
    await confirmed(granted);
    const perms = await call("listPermissions", {permissions: "send", addresses: user, verbose: true});
    assert.equal(perms.length, 1);
    assert.equal(perms[0].address, user);
    assert.deepEqual(perms[0].admins, [me]);
    // revoke sends native-amount 0 and empty comments.
    const revoked = await call("revoke", {addresses: user, permissions: "send"});
    await confirmed(revoked);
    assert.deepEqual(await call("listPermissions", {permissions: "send", addresses: user}), []);

    // create sends [type, name, open, details {}].
    const created = await call("create", {type: "stream", name: "npm", open: true});
    await confirmed(created);
    const streams = await call("listStreams");  // stream "*", verbose false
    assert.ok(streams.some((s) => s.name === "npm" && s.createtxid === created));

    const one = await call("publish", {stream: "npm", key: "k1", data: {json: {text: "one"}}});
    const two = await call("publish", {stream: "npm", key: "k2", data: "00ff"});
    await confirmed(one);
    await confirmed(two);
    // liststreamitems gets [stream, false, 10, -10, false]: the last ten, oldest first.
    const items = await call("listStreamItems", {stream: "npm"});
    assert.deepEqual(items.map((i) => i.txid), [one, two]);
    assert.deepEqual(items[0].keys, ["k1"]);
    assert.deepEqual(items[0].data, {json: {text: "one"}});
    assert.equal(items[1].data, "00ff");
    const last = await call("listStreamItems", {stream: "npm", count: 1});  // start -1
    assert.deepEqual(last.map((i) => i.txid), [two]);
    const item = await call("getStreamItem", {stream: "npm", txid: one});
    assert.equal(item.publishers[0], me);
    assert.deepEqual(item.data, {json: {text: "one"}});
    const keyItems = await call("listStreamKeyItems", {stream: "npm", key: "k2"});
    assert.deepEqual(keyItems.map((i) => i.txid), [two]);
    const keys = await call("listStreamKeys", {stream: "npm"});
    assert.deepEqual(keys.map((k) => k.key).sort(), ["k1", "k2"]);
    const publishers = await call("listStreamPublishers", {stream: "npm"});
    assert.equal(publishers[0].publisher, me);
    const byMe = await call("listStreamPublisherItems", {stream: "npm", address: me});
    assert.equal(byMe.length, 2);

    const wtx = await call("getWalletTransaction", {txid: one});  // watch-only, verbose: false
    assert.equal(wtx.txid, one);
    assert.ok(wtx.confirmations >= 1);
    const wtxs = await call("listWalletTransactions", {count: 100});
    assert.ok(wtxs.some((t) => t.txid === one));

    const raw = await call("getRawTransaction", {txid: one});  // verbose 0: hex
    assert.match(raw, /^[0-9a-f]+$/);
    const verbose = await call("getRawTransaction", {txid: one, verbose: 1});
    assert.equal(verbose.txid, one);
    assert.equal(verbose.hex, raw);
    assert.ok(verbose.vin.length >= 1 && verbose.vout.length >= 1);
    assert.equal((await call("decodeRawTransaction", {hexstring: raw})).txid, one);

    const located = await call("getStreamItem", {stream: "npm", txid: one, verbose: true});
    assert.equal(located.blockhash, wtx.blockhash);
    const block = await call("getBlock", {hash: wtx.blockhash});  // format true: verbose
    assert.equal(block.hash, wtx.blockhash);
    assert.ok(block.tx.includes(one));
    const byHeight = await call("getBlockHash", {height: block.height});
    assert.equal(byHeight, block.hash);

    const peers = await call("getPeerInfo");
    assert.ok(peers.some((p) => p.handshake === env("MC_PEER_ADDRESS")), JSON.stringify(peers));
    const mempool = await call("getMempoolInfo");
    assert.equal(typeof mempool.size, "number");
    assert.ok(Array.isArray(await call("getRawMempool")));
    assert.equal(typeof (await call("getMiningInfo")).blocks, "number");
    assert.equal(typeof (await call("getBlockchainInfo")).bestblockhash, "string");
    assert.equal(typeof (await call("getNetworkInfo")).version, "number");

    // The rest of the client's wallet, address, stream and control methods, with its defaults.
    const verboseAddrs = await call("getAddresses", {verbose: true});
    assert.ok(verboseAddrs.some((a) => a.address === me && a.ismine === true));
    // The client's count default is the string "MAX", which MultiChain's paramtoint refuses
    // (-8 invalid count) as chainmill does: give a number.
    const listed = await call("listAddresses", {addresses: me, count: 10});
    assert.deepEqual(listed.map((a) => a.address), [me]);
    const pair = (await call("createKeyPairs"))[0];
    assert.ok(pair.address && pair.privkey && pair.pubkey);
    await call("importAddress", {address: pair.address, rescan: false});
    assert.ok((await call("listAddresses", {verbose: true, count: 100})).some((a) => a.address === pair.address));
    const wif = await call("dumpPrivKey", {address: user});
    await call("importPrivKey", {privkey: wif});
    const sig = await call("signMessage", {address: me, message: "npm"});
    assert.equal(await call("verifyMessage", {address: me, signature: sig, message: "npm"}), true);
    assert.equal(typeof (await call("getWalletInfo")).walletversion, "number");
    assert.deepEqual(await call("getTotalBalances"), []);
    assert.deepEqual(await call("getAddressBalances", {address: me}), []);
    assert.deepEqual(await call("getMultiBalances"), {total: []});
    assert.deepEqual(await call("listUnspent"), []);
    assert.equal((await call("getAddressTransaction", {address: me, txid: one})).txid, one);
    const mine = await call("listAddressTransactions", {address: me, count: 100});
    assert.ok(mine.some((t) => t.txid === one));

    const grantedFrom = await call("grantFrom", {from: me, to: user, permissions: "receive"});
    await confirmed(grantedFrom);
    assert.equal((await call("listPermissions", {permissions: "receive", addresses: user})).length, 1);
    await confirmed(await call("revokeFrom", {from: me, to: user, permissions: "receive"}));
    assert.deepEqual(await call("listPermissions", {permissions: "receive", addresses: user}), []);

    const createdFrom = await call("createFrom", {from: me, type: "stream", name: "npm2",
                                                  open: false});
    await confirmed(createdFrom);
    await call("subscribe", {stream: "npm2"});  // rescan true
    const three = await call("publishFrom", {from: me, stream: "npm2", key: "k3",
                                             data: {text: "three"}});
    await confirmed(three);
    assert.deepEqual((await call("getStreamItem", {stream: "npm2", txid: three})).data,
                     {text: "three"});
    await call("unsubscribe", {stream: "npm2"});

    await call("setRunTimeparam", {param: "maxshowndata", value: 20});
    assert.equal((await call("getRuntimeParams")).maxshowndata, 20);
    assert.match(await call("getBlockHash", {height: 0}), /^[0-9a-f]{64}$/);
    const blocks = await call("listBlocks", {blocks: String(block.height)});
    assert.deepEqual(blocks.map((b) => b.hash), [block.hash]);
    const added = await call("getAddedNodeinfo", {verbose: true});
    assert.ok(Array.isArray(added));
    await call("ping");
    await call("pause", {tasks: "mining"});
    await call("resume", {tasks: "mining"});
    assert.ok((await call("help")).length > 0);

    // An RPC error reaches the caller as MultiChain's error object.
    await assert.rejects(call("getStreamItem", {stream: "nosuchstream", txid: one}),
                         (e) => e.code === -708);

    console.log(JSON.stringify({called: [...called].sort(), one, two, stream: "npm"}));
}

main().catch((e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
});
