#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

extension ChannelHandlerContext {
    /// Writes `bytes` (not flushed): straight to the channel's `core` when the caller is the pipeline's only handler
    /// and holds it (the pipeline's head would hand the write there too), otherwise through the pipeline.
    @inline(__always)
    func write(_ bytes: ByteBuffer, core: ChannelCore?, promise: EventLoopPromise<Void>? = nil) {
        if let core { core.write0(NIOAny(bytes), promise: promise) } else { write(NIOAny(bytes), promise: promise) }
    }

    /// Flushes through `core` when given (see `write(_:core:)`), otherwise through the pipeline.
    @inline(__always)
    func flush(core: ChannelCore?) {
        if let core { core.flush0() } else { flush() }
    }
}

/// A connection's socket, written by its handler directly while NIO holds none of its bytes.
///
/// Delivering through NIO costs each write a pass through its pending-writes queue (an append, a flush point, a
/// vector of one, the lifecycle checks and their reference counting) before the same system call the handler could
/// make itself. So a connection whose pipeline is just its own handler (after the upgrade) sends with `send` or
/// `sendmsg` itself, non-blocking. Whatever the kernel does not take at once goes to NIO after all, which keeps it
/// against the channel's water marks as before, and from then on every write follows it through NIO until NIO has
/// written everything (a zero-byte write's promise says when: NIO completes writes in order). The order on the wire
/// is therefore the order of the writes, and a slow reader is found by the same water marks.
///
/// NIO does not publish a channel's descriptor; it is read by reflection and used only when the socket it names has
/// the channel's own two addresses.
struct SocketOutput {
    /// The socket while direct writes are allowed at all; -1 once anything failed or the channel closed.
    private(set) var descriptor: CInt = -1
    /// NIO may hold bytes of this connection: writes go through NIO until it has written them.
    private(set) var owed = false
    /// A zero-byte write is waiting in NIO to say when NIO has written everything before it.
    var watching = false
    /// Counts writes handed to NIO; a watch that completes with the count it started with finds NIO empty.
    private(set) var handedOff: UInt32 = 0

    /// Whether the next write may go to the socket directly.
    var direct: Bool { descriptor >= 0 && !owed }

    /// Finds the socket of `channel`. Direct writes begin once what NIO holds (the handshake's response) is out.
    mutating func attach(to channel: Channel) {
        guard let descriptor = Self.descriptor(of: channel) else { return }
        self.descriptor = descriptor
        owed = true
    }

    /// No more direct writes (the channel closed or the socket failed).
    mutating func detach() {
        descriptor = -1
    }

    /// Notes a write handed to NIO: later writes follow it there.
    mutating func handOff() {
        guard descriptor >= 0 else { return }
        owed = true
        handedOff &+= 1
    }

    /// A watch that started at `mark` completed: NIO has written everything handed to it by then.
    mutating func drained(at mark: UInt32) {
        if handedOff == mark { owed = false }
    }

    /// Sends as much of `buffer` as the kernel takes now. Returns the number of bytes sent, or -1 when the socket
    /// failed: then the caller detaches, and NIO, handed the rest, meets the same error and closes the channel.
    /// (Not mutating, so that the common case, a whole frame sent, changes nothing.)
    func send(_ buffer: ByteBuffer) -> Int {
        while true {
            let sent = buffer.withUnsafeReadableBytes {
                Self.sendBytes(descriptor, $0.baseAddress, $0.count)
            }
            if sent >= 0 { return sent }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return 0
            default: return -1
            }
        }
    }

    /// Sends `frames` in order, as much as the kernel takes now (one `sendmsg` per 64 frames). Returns the index of
    /// the first frame not wholly sent (with its reader index moved past what went), `frames.count` when all went,
    /// nil when the socket failed (then nothing more goes directly; see `send(_:)`).
    mutating func send(_ frames: inout [ByteBuffer]) -> Int? {
        var first = 0
        while first < frames.count {
            let count = min(frames.count - first, 64)
            var total = 0
            let sent: Int = withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
                for index in 0..<count {
                    // The frames stay alive and unchanged in `frames` during the call, so their bytes stay put.
                    frames[first + index].withUnsafeReadableBytes {
                        vectors[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress),
                            iov_len: $0.count)
                        total += $0.count
                    }
                }
                var message = msghdr()
                message.msg_iov = vectors.baseAddress
                message.msg_iovlen = count
                return Self.sendMessage(descriptor, &message)
            }
            if sent < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK: return first
                default:
                    descriptor = -1
                    return nil
                }
            }
            var left = sent
            while left > 0, left >= frames[first].readableBytes {
                left -= frames[first].readableBytes
                first += 1
            }
            if left > 0 { frames[first].moveReaderIndex(forwardBy: left) }
            if sent < total { return first }
            // Zero-byte frames at the end of the batch went too.
            while first < frames.count, frames[first].readableBytes == 0 { first += 1 }
        }
        return first
    }

    #if os(Linux)
    private static let flags = CInt(MSG_NOSIGNAL | MSG_DONTWAIT)
    #else
    private static let flags = CInt(MSG_DONTWAIT)
    #endif

    private static func sendBytes(_ descriptor: CInt, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
        #if canImport(Glibc)
        Glibc.send(descriptor, bytes, count, flags)
        #else
        Darwin.send(descriptor, bytes, count, flags)
        #endif
    }

    private static func sendMessage(_ descriptor: CInt, _ message: UnsafePointer<msghdr>) -> Int {
        sendmsg(descriptor, message, flags)
    }

    /// The descriptor of `channel`'s socket, when reflection finds one and the socket it names has the channel's own
    /// local and remote addresses.
    static func descriptor(of channel: Channel) -> CInt? {
        guard let socket = child("socket", of: channel), let descriptor = child("descriptor", of: socket) as? CInt,
            descriptor >= 0, let local = channel.localAddress, let remote = channel.remoteAddress,
            address(of: descriptor, peer: false) == local, address(of: descriptor, peer: true) == remote
        else { return nil }
        return descriptor
    }

    private static func child(_ label: String, of subject: Any) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: subject)
        while let current = mirror {
            if let child = current.children.first(where: { $0.label == label }) { return child.value }
            mirror = current.superclassMirror
        }
        return nil
    }

    private static func address(of descriptor: CInt, peer: Bool) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(descriptor, $0, &length) : getsockname(descriptor, $0, &length)
            }
        }
        guard result == 0 else { return nil }
        switch CInt(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
            }
        default:
            return nil
        }
    }
}

/// A handler that writes its connection's socket directly while it may (`SocketOutput`): the one place where its
/// writes are split between the socket and the channel.
protocol DirectWriter: AnyObject {
    var output: SocketOutput { get set }
    /// The channel's core when writes skip the pipeline (`ChannelHandlerContext.write(_:core:)`).
    var core: ChannelCore? { get }
    var context: ChannelHandlerContext? { get }
}

extension DirectWriter {
    /// Hands what `send` left of `bytes` (`sent` bytes went, or -1: the socket failed) to the channel, flushed.
    func handOver(_ bytes: ByteBuffer, sent: Int, context: ChannelHandlerContext) {
        var rest = bytes
        if sent > 0 { rest.moveReaderIndex(forwardBy: sent) } else if sent < 0 { output.detach() }
        handToChannel(rest, context: context)
        flushChannel(context: context)
    }

    /// Sends `frames` now, in order: to the socket when NIO holds nothing of this connection, otherwise (and whatever
    /// the socket did not take) through the channel, flushed. Empties `frames`.
    func sendNow(_ frames: inout [ByteBuffer], context: ChannelHandlerContext) {
        guard !frames.isEmpty else { return }
        var first = 0
        if output.direct {
            guard let sent = output.send(&frames) else { return handFramesToChannel(&frames, from: 0, context: context) }
            first = sent
        }
        handFramesToChannel(&frames, from: first, context: context)
    }

    private func handFramesToChannel(_ frames: inout [ByteBuffer], from first: Int, context: ChannelHandlerContext) {
        if first < frames.count {
            for index in first..<frames.count { handToChannel(frames[index], context: context) }
            flushChannel(context: context)
        }
        frames.removeAll()
    }

    /// Writes `bytes` to the channel (not flushed): from now on writes follow them through NIO until it has written
    /// them.
    func handToChannel(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        context.write(bytes, core: core)
        output.handOff()
    }

    /// Flushes the channel, and has direct writes resume once NIO has written what it holds.
    func flushChannel(context: ChannelHandlerContext) {
        context.flush(core: core)
        watchHandedOff(context: context)
    }

    /// Begins direct writes on `context`'s channel (whose pipeline is just this handler from now on), once NIO has
    /// written what it holds.
    func attachSocket(context: ChannelHandlerContext) {
        output.attach(to: context.channel)
        watchHandedOff(context: context)
    }

    /// While NIO holds bytes of this connection, a zero-byte write behind them says when they are out; direct writes
    /// resume then, unless more was handed to NIO meanwhile (then the next watch goes behind that).
    private func watchHandedOff(context: ChannelHandlerContext) {
        guard output.owed, !output.watching, output.descriptor >= 0 else { return }
        output.watching = true
        let mark = output.handedOff
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { [self] result in
            output.watching = false
            guard case .success = result else { return output.detach() }
            output.drained(at: mark)
            if let context = self.context { watchHandedOff(context: context) }
        }
        context.write(ByteBuffer(), core: core, promise: promise)
        context.flush(core: core)
    }
}
