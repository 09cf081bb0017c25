import HubCore
import HubNative
import Logging
import NIOCore

/// The per-workspace SSE cap across every hub sharing a Redis: each stream holds a lease in the workspace's sorted set
/// (`sse:{workspace}`, scored by expiry). The hub renews its leases every third of their TTL; leases of a hub that
/// died are not renewed and expire, freeing their places.
public final class RedisStreamLimiter: StreamLimiter, @unchecked Sendable {
    public let limit: Int
    private let broker: RedisBroker
    private let hubID: String
    private var next = 0
    /// Leases this hub holds, by workspace. Confined to the broker's loop.
    private var held: [String: Set<String>] = [:]
    private var renewal: RepeatedTask?
    private let logger: Logger

    public init(limit: Int, broker: RedisBroker, logger: Logger) {
        self.limit = limit
        self.broker = broker
        self.logger = logger
        var rng = SystemRandomNumberGenerator()
        hubID = String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 36)
    }

    private var ttlMilliseconds: Int64 { Int64(broker.configuration.redis.leaseTTLSeconds * 1000) }

    public func start() {
        let every = TimeAmount.milliseconds(max(ttlMilliseconds / 3, 100))
        broker.loop.execute { [self] in
            renewal = broker.loop.scheduleRepeatedTask(initialDelay: every, delay: every) { [weak self] _ in
                self?.renew()
            }
        }
    }

    public func acquire(_ workspace: String, on eventLoop: EventLoop) -> EventLoopFuture<StreamLease?> {
        broker.loop.flatSubmit { [self] () -> EventLoopFuture<StreamLease?> in
            next += 1
            let lease = StreamLease(workspace: workspace, id: "\(hubID):\(next)")
            let arguments = [Array(String(limit).utf8), Array(lease.id.utf8), Array(String(ttlMilliseconds).utf8)]
            return RedisScripts.acquireLease.run(on: broker.commands, keys: [broker.keys.leases(workspace)], arguments: arguments)
                .flatMapThrowing { reply -> StreamLease? in
                    guard case .integer(let taken) = reply else { throw BrokerError.failed("unexpected lease reply \(reply)") }
                    guard taken == 1 else { return nil }
                    self.held[workspace, default: []].insert(lease.id)
                    return lease
                }
                .flatMapErrorThrowing { error in
                    if error is BrokerError { throw error }
                    throw BrokerError.unavailable(retryAfterSeconds: 2)
                }
        }.hop(to: eventLoop)
    }

    public func release(_ lease: StreamLease) {
        broker.loop.execute { [self] in
            held[lease.workspace]?.remove(lease.id)
            if held[lease.workspace]?.isEmpty == true { held[lease.workspace] = nil }
            // If Redis is unreachable now the lease simply expires.
            _ = broker.commands.send(RESPCommand.buffer("ZREM", broker.keys.leases(lease.workspace), lease.id))
        }
    }

    private func renew() {
        guard broker.commands.isReady else { return }
        for (workspace, ids) in held where !ids.isEmpty {
            let arguments = [Array(String(ttlMilliseconds).utf8)] + ids.map { Array($0.utf8) }
            RedisScripts.renewLeases.run(on: broker.commands, keys: [broker.keys.leases(workspace)], arguments: arguments)
                .whenFailure { [logger] error in
                    logger.debug("lease renewal failed", metadata: ["workspace": "\(workspace)", "error": "\(error)"])
                }
        }
    }
}
