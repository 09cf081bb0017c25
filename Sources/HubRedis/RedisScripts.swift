import HubNative
import NIOCore

/// Redis key and channel names. Executions are keyed by id alone (`execution:{id}:…`), as other producers know them;
/// the workspace that first reports an execution owns its id (`meta.ws`), and the hub refuses another workspace's
/// events for it, so events never cross workspaces.
struct RedisKeys: Sendable {
    let prefix: String

    /// Hash: `seq` (the last assigned), `ws` (the owning workspace). Lives `counterTTL` after the last event.
    func meta(_ execution: String) -> String { prefix + "execution:" + execution + ":meta" }
    /// Stream of delivered event objects, entry id `{seq}-0`, field `e`. Capped; lives `historyTTL` after the last event.
    func log(_ execution: String) -> String { prefix + "execution:" + execution + ":log" }
    /// Sorted set of idempotency keys scored by their seq, capped.
    func idempotency(_ execution: String) -> String { prefix + "execution:" + execution + ":idem" }
    /// Pub/sub channel of the execution's events.
    func channel(_ execution: String) -> String { prefix + "execution:" + execution + ":events" }
    /// Sorted set: the hubs holding SSE places in the workspace, scored by expiry (Redis time, ms).
    func leaseHubs(_ workspace: String) -> String { prefix + "sse:" + workspace + ":hubs" }
    /// Hash: hub id -> the number of SSE places it holds in the workspace.
    func leaseCounts(_ workspace: String) -> String { prefix + "sse:" + workspace + ":streams" }

    /// The execution id of a channel name, or nil for a channel that is not an execution's.
    func execution(ofChannel channel: [UInt8]) -> String? {
        let name = String(decoding: channel, as: UTF8.self)
        let head = prefix + "execution:"
        guard name.hasPrefix(head), name.hasSuffix(":events"), name.utf8.count > head.utf8.count + 7 else { return nil }
        return String(name.dropFirst(head.count).dropLast(7))
    }
}

/// A Lua script run with EVALSHA (loaded on every connection), and with EVAL when Redis forgot it.
struct RedisScript: Sendable {
    let source: String
    let sha: String

    init(_ source: String) {
        self.source = source
        self.sha = Hex.encode(Digest.sha1(Array(source.utf8)))
    }

    func evalsha(keys: [String], arguments: [[UInt8]]) -> ByteBuffer {
        command("EVALSHA", sha, keys: keys, arguments: arguments)
    }

    func eval(keys: [String], arguments: [[UInt8]]) -> ByteBuffer {
        command("EVAL", source, keys: keys, arguments: arguments)
    }

    private func command(_ verb: String, _ script: String, keys: [String], arguments: [[UInt8]]) -> ByteBuffer {
        var argv: [[UInt8]] = [Array(verb.utf8), Array(script.utf8), Array(String(keys.count).utf8)]
        argv.reserveCapacity(3 + keys.count + arguments.count)
        argv += keys.map { Array($0.utf8) }
        argv += arguments
        return RESPCommand.buffer(argv)
    }

    /// Runs the script on `client` (`RedisConnection.runScript`: EVALSHA, and EVAL again after a NOSCRIPT answer,
    /// in the order of the calls).
    func run(on client: RedisClient, keys: [String], arguments: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        client.runScript(self, keys: keys, arguments: arguments)
    }

    /// The same script under another SHA1: `tag` is its first line, a comment. A hub runs copies tagged with its own
    /// id, so that nothing but the hub itself loads them again after `SCRIPT FLUSH` (as another hub's EVAL would
    /// load a shared script): `RedisConnection.runScript` keeps calls in order only if that holds.
    func tagged(_ tag: String) -> RedisScript {
        RedisScript("-- " + tag + "\n" + source)
    }

    func load() -> ByteBuffer { RESPCommand.buffer("SCRIPT", "LOAD", source) }
}

enum RedisScripts {
    /// Stores and publishes a batch atomically: for each event, assign the execution's next seq, append the delivered
    /// object to the capped history stream, refresh the expiries, remember the idempotency key, and PUBLISH.
    ///
    /// KEYS: meta, log, idem of each event. ARGV: prefix, history TTL ms, stream cap, counter TTL ms, idempotency cap,
    /// then per event: workspace ('' = the execution's owner), execution, idempotency key ('' = none), tail (the
    /// delivered object after its seq).
    /// Returns {1, seq, duplicate, seq, duplicate, …}, or {0, index, owner} when event `index` (1-based) names an
    /// execution owned by another workspace (or, with workspace '', by none); then nothing was stored.
    static let publish = RedisScript(#"""
        local prefix = ARGV[1]
        local historyTTL, maxlen = tonumber(ARGV[2]), tonumber(ARGV[3])
        local counterTTL, idemCap = tonumber(ARGV[4]), tonumber(ARGV[5])
        local n = #KEYS / 3
        local owners = {}
        for i = 1, n do
          local meta = KEYS[(i - 1) * 3 + 1]
          local ws = ARGV[5 + (i - 1) * 4 + 1]
          local owner = owners[meta]
          if owner == nil then owner = redis.call('HGET', meta, 'ws') end
          if ws == '' then
            if not owner then return {0, i, ''} end
            ws = owner
          elseif owner and owner ~= ws then
            return {0, i, owner}
          end
          owners[meta] = ws
        end
        local out = {1}
        for i = 1, n do
          local meta, log, idem = KEYS[(i - 1) * 3 + 1], KEYS[(i - 1) * 3 + 2], KEYS[(i - 1) * 3 + 3]
          local a = 5 + (i - 1) * 4
          local ws, exec, key, tail = owners[meta], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
          local seen = false
          if key ~= '' then seen = redis.call('ZSCORE', idem, key) end
          if seen then
            out[#out + 1] = tonumber(seen)
            out[#out + 1] = 1
          else
            local seq = redis.call('HINCRBY', meta, 'seq', 1)
            redis.call('HSETNX', meta, 'ws', ws)
            redis.call('PEXPIRE', meta, counterTTL)
            local json = '{"execution":"' .. exec .. '","workspace":"' .. ws .. '","seq":' .. seq .. ',' .. tail
            local id = seq .. '-0'
            local added = redis.pcall('XADD', log, 'MAXLEN', maxlen, id, 'e', json)
            if type(added) == 'table' and added.err then
              -- The stream outlived its counter (evicted meta): start it again.
              redis.call('DEL', log)
              redis.call('XADD', log, 'MAXLEN', maxlen, id, 'e', json)
            end
            redis.call('PEXPIRE', log, historyTTL)
            if key ~= '' then
              redis.call('ZADD', idem, seq, key)
              if redis.call('ZCARD', idem) > idemCap then redis.call('ZREMRANGEBYRANK', idem, 0, -idemCap - 1) end
              redis.call('PEXPIRE', idem, counterTTL)
            end
            redis.call('PUBLISH', prefix .. 'execution:' .. exec .. ':events', json)
            out[#out + 1] = seq
            out[#out + 1] = 0
          end
        end
        return out
        """#)

    /// What a new subscription needs, read in one step: the head seq, the first seq still in history, and the history
    /// after `since`.
    ///
    /// KEYS: meta, log. ARGV: the watcher's workspace, since ('' = none).
    /// Returns {0} when another workspace owns the execution, else {1, head, firstSeq (0: none held), entries}.
    static let read = RedisScript(#"""
        local owner = redis.call('HGET', KEYS[1], 'ws')
        if owner and owner ~= ARGV[1] then return {0} end
        local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
        local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
        local firstSeq = 0
        if first[1] then firstSeq = tonumber(string.match(first[1][1], '^(%d+)')) end
        local entries = {}
        if ARGV[2] ~= '' then
          local since = tonumber(ARGV[2])
          if since > head then
            entries = redis.call('XRANGE', KEYS[2], '-', '+')
          elseif since < head then
            entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
          end
        end
        return {1, head, firstSeq, entries}
        """#)

    /// Takes a place among a workspace's streams if one is free. Each hub's places are one count (`KEYS[2]`, a hash
    /// by hub id) under one expiry (`KEYS[1]`, a sorted set of hub ids scored by expiry), so that renewing costs one
    /// call per hub and workspace whatever the number of streams. The counts of hubs whose expiry passed (they
    /// stopped renewing) are dropped first. Times are Redis's own clock, so hubs need not agree on theirs.
    ///
    /// KEYS: the workspace's hub expiries, its counts. ARGV: limit, hub id, TTL ms. Returns 1 (taken) or 0 (full).
    static let acquireLease = RedisScript(#"""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
        if #gone > 0 then
          redis.call('HDEL', KEYS[2], unpack(gone))
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        end
        local total = 0
        for _, n in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(n) end
        if total >= tonumber(ARGV[1]) then return 0 end
        redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('PEXPIRE', KEYS[2], ARGV[3])
        return 1
        """#)

    /// Gives one of a hub's places back (a no-op when its count was dropped as expired: its next renewal sets it).
    ///
    /// KEYS: the workspace's hub expiries, its counts. ARGV: hub id. Returns the hub's count after it.
    static let releaseLease = RedisScript(#"""
        if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
        local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
        if n <= 0 then
          redis.call('HDEL', KEYS[2], ARGV[1])
          redis.call('ZREM', KEYS[1], ARGV[1])
          return 0
        end
        return n
        """#)

    /// Extends a hub's places in one workspace and sets their number, which repairs any drift (a release lost with
    /// the connection, places dropped while Redis was unreachable). The number counts acquisitions still waiting for
    /// their answer: those were sent, and so are applied, before this.
    ///
    /// KEYS: the workspace's hub expiries, its counts. ARGV: hub id, TTL ms, count. Returns the count.
    static let renewLeases = RedisScript(#"""
        local n = tonumber(ARGV[3])
        if n <= 0 then
          redis.call('HDEL', KEYS[2], ARGV[1])
          redis.call('ZREM', KEYS[1], ARGV[1])
          return 0
        end
        local t = redis.call('TIME')
        local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[1], n)
        redis.call('ZADD', KEYS[1], expiry, ARGV[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
        return n
        """#)

}

/// One hub's copies of the scripts, tagged with its id (`RedisScript.tagged`).
struct HubScripts: Sendable {
    let publish: RedisScript
    let read: RedisScript
    let acquireLease: RedisScript
    let releaseLease: RedisScript
    let renewLeases: RedisScript

    init(tag: String) {
        publish = RedisScripts.publish.tagged(tag)
        read = RedisScripts.read.tagged(tag)
        acquireLease = RedisScripts.acquireLease.tagged(tag)
        releaseLease = RedisScripts.releaseLease.tagged(tag)
        renewLeases = RedisScripts.renewLeases.tagged(tag)
    }

    /// What every new commands connection loads.
    var all: [RedisScript] { [publish, read, acquireLease, releaseLease, renewLeases] }
}
