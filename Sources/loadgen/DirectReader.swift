#if canImport(Glibc)
import CNIOLinux
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Reads the subscribers' connections once they are ready, on a thread of its own, with one epoll set and one
/// `recvmsg(2)` per ready connection into one buffer (`loadgen subscribe --direct`), which also gives the kernel's
/// receive timestamp (`SubscriberStats.arrivalHistogram`).
///
/// Why: NIO's read path costs some 4 µs of user time per read here (its selector, the channel's lifecycle checks,
/// the pipeline, a buffer per read, and their reference counting), about as much as the kernel's part of the read.
/// A load generator on one core that pays that reads 10,000 sockets in rounds of 40–270 ms at 80,000 reads/s, and its
/// own queueing then shows up as the server's latency. NIO still opens each connection and does the handshake; then
/// this reader takes a duplicate of its descriptor and NIO's channel is closed (closing one of two descriptors of a
/// socket sends nothing), so that NIO neither reads it nor watches it for the peer's close any more. (Turning NIO's
/// reading off is not enough: it still watches for the end of the stream, and then reads the rest itself and closes
/// the socket.) One connection at a time holds two descriptors, so up to 15,000 connections stay within a process's
/// 20,000. A connection the server closes is counted when this reader sees its end, and this reader closes it.
///
/// Once a connection is handed over, only this reader touches its handler and subscriber, under `lock`, which the
/// process's commands (`reset`, `report`) take too.
///
/// With `spin` (`loadgen subscribe --spin`) the reader never sleeps in `epoll_wait`: it polls, and yields the core
/// when nothing is ready. On loopback the server's `write(2)` runs this side's TCP receive path and, when this thread
/// sleeps, wakes it, so the server pays for waking its own client, a cost a server whose clients are on other hosts
/// does not pay (there the client's network card interrupt wakes it). Spinning takes that cost out of the server's
/// CPU for every server alike, to measure how much of it there is.
final class DirectReader: @unchecked Sendable {
    private struct Entry {
        let fd: Int32
        let handler: SubscriberHandler
        let subscriber: SubscriberState
    }

    let lock = NIOLock()
    private let epoll: Int32
    private var entries: [Entry?] = []
    private var running = true
    private let pool = NIOThreadPool(numberOfThreads: 1)
    private let spin: Bool

    init(spin: Bool) {
        self.spin = spin
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1 failed: errno \(errno)")
    }

    /// The descriptor of every IPv4 socket of the process, by its local address ("127.0.0.2:40001"): how a NIO
    /// channel's descriptor is found (NIO does not hand it out).
    static func socketsByLocalAddress() -> [String: Int32] {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        var out: [String: Int32] = [:]
        for fd in Int32(3)..<Int32(min(limit.rlim_cur, 1 << 20)) {
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            guard ok == 0, address.sin_family == sa_family_t(AF_INET) else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var raw = address.sin_addr
            guard inet_ntop(AF_INET, &raw, &text, socklen_t(text.count)) != nil else { continue }
            let host = text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            out["\(host):\(UInt16(bigEndian: address.sin_port))"] = fd
        }
        return out
    }

    /// Takes over reading `subscriber`'s connection, whose descriptor is `fd`, and closes NIO's channel. On the event
    /// loop.
    func adopt(_ subscriber: SubscriberState, handler: SubscriberHandler, channel: Channel, fd: Int32) {
        let copy = dup(fd)
        precondition(copy >= 0, "dup failed: errno \(errno)")
        // Receive timestamps, for the latency to the socket (`SubscriberHandler.readDirect`).
        var on: Int32 = 1
        precondition(setsockopt(copy, SOL_SOCKET, SO_TIMESTAMPNS_OLD, &on, socklen_t(MemoryLayout<Int32>.size)) == 0,
            "setsockopt(SO_TIMESTAMPNS) failed: errno \(errno)")
        handler.handOver()
        channel.close(promise: nil)
        let index = lock.withLock { () -> Int in
            subscriber.directOpen = true
            entries.append(Entry(fd: copy, handler: handler, subscriber: subscriber))
            return entries.count - 1
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = UInt64(index)
        precondition(epoll_ctl(epoll, EPOLL_CTL_ADD, copy, &event) == 0, "epoll_ctl failed: errno \(errno)")
    }

    func start() {
        pool.start()
        pool.submit { [self] _ in run() }
    }

    func stop() {
        lock.withLock { running = false }
        try? pool.syncShutdownGracefully()
    }

    private func run() {
        withEpollBuffers { events, capacity, storage in loop(events: events, capacity: capacity, storage: storage) }
    }

    private func loop(events: UnsafeMutablePointer<epoll_event>, capacity: Int32,
        storage: UnsafeMutableRawBufferPointer)
    {
        while lock.withLock({ running }) {
            let ready = epoll_wait(epoll, events, capacity, spin ? 0 : 100)
            guard ready > 0 else {
                // Lets the other processes on this core (the publisher, Redis) run whenever they are ready.
                if spin { sched_yield() }
                continue
            }
            lock.withLock {
                for i in 0..<Int(ready) {
                    let index = Int(events[i].data.u64)
                    guard let entry = entries[index] else { continue }
                    if !entry.handler.readDirect(fd: entry.fd, storage: storage) {
                        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, entry.fd, nil)
                        close(entry.fd)
                        entries[index] = nil
                        entry.subscriber.directOpen = false
                    }
                }
            }
        }
    }
}

/// Runs `body` with room for 1,024 epoll events and one 64 KiB read buffer (the direct reader's and the floor
/// server's loops).
func withEpollBuffers<T>(
    _ body: (UnsafeMutablePointer<epoll_event>, Int32, UnsafeMutableRawBufferPointer) throws -> T
) rethrows -> T {
    let capacity = 1024
    let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    defer {
        events.deallocate()
        storage.deallocate()
    }
    return try body(events, Int32(capacity), storage)
}

#endif
