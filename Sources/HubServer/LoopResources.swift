import HubCore
import HubNative
import NIOCore

/// State shared by every connection of one event loop: touched only on that loop, so it needs no lock.
///
/// With `server_no_context_takeover` every outgoing message is compressed from an empty window, so one deflater
/// (per window size) serves every connection of the loop and an idle connection holds no zlib memory.
final class LoopResources: @unchecked Sendable {
    let eventLoop: EventLoop
    /// This loop's subscription table.
    let router: LoopRouter
    /// Encodes events published from this loop (owns its own deflater).
    let encoder = EventEncoder()
    /// Flushes the connections of this loop that wrote since its last pass.
    let flusher: LoopFlusher
    /// The deadlines of this loop's long-lived connections, served by one task.
    let timers: LoopTimers
    /// Tokens verified on this loop: connections opened with one token share its `Principal`.
    let verifiedTokens: VerifiedTokens
    /// Deflaters by window size: a connection's frames must use a window no larger than it agreed to.
    private var deflaters: [Int: Deflater] = [:]

    init(eventLoop: EventLoop, metrics: HubMetrics, tokens: TokenVerifier) {
        self.eventLoop = eventLoop
        self.verifiedTokens = VerifiedTokens(verifier: tokens)
        self.router = LoopRouter(eventLoop: eventLoop, metrics: metrics)
        let flusher = LoopFlusher(eventLoop: eventLoop)
        self.flusher = flusher
        self.timers = LoopTimers(eventLoop: eventLoop)
        router.flushPass = { flusher.pass() }
    }

    func deflater(windowBits: Int) -> Deflater {
        if let d = deflaters[windowBits] { return d }
        let d = Deflater(windowBits: windowBits)
        deflaters[windowBits] = d
        return d
    }
}

/// One `LoopResources` per event loop, built before the server starts and never changed.
struct LoopResourceTable: Sendable {
    private let table: [ObjectIdentifier: LoopResources]

    init(group: EventLoopGroup, metrics: HubMetrics, tokens: TokenVerifier) {
        var table: [ObjectIdentifier: LoopResources] = [:]
        for loop in group.makeIterator() {
            table[ObjectIdentifier(loop)] = LoopResources(eventLoop: loop, metrics: metrics, tokens: tokens)
        }
        self.table = table
    }

    func resources(for loop: EventLoop) -> LoopResources {
        guard let r = table[ObjectIdentifier(loop)] else { preconditionFailure("event loop outside the server's group") }
        return r
    }
}
