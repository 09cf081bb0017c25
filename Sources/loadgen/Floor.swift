#if canImport(Glibc)
import ArgumentParser
import CNIOLinux
import Glibc
import HubNative

/// `loadgen floor`: a fan-out server that does nothing but the system calls, which the benchmarks measure beside the
/// hub and Nchan. It speaks Nchan's routes (`GET /sub/{channel}` as WebSocket or EventSource, `POST /pub/{channel}`),
/// so the same load generator drives it: one epoll set, one `read(2)` per ready connection per round, and at the end
/// of each round one `write(2)` per connection with something to send, carrying everything the round gave it (every
/// frame of every publish read in that round). No history, authorisation, JSON envelope, heartbeats or limits.
///
/// What it is for: its CPU per delivery is about the least a server on one core pays on this host for a workload,
/// and its latency is what a server that does only that gets. A target it misses too is set by the host and the
/// workload, not by a server's own code. (Its latency is not a lower bound for every server: under overload, how a
/// server orders its reads and writes decides latency as much as what it costs.)
struct Floor: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: """
        A minimal fan-out server on Nchan's routes (WebSocket and EventSource subscribers, HTTP publishes): one read \
        per ready connection and one write per connection with frames, per round of its epoll loop. Runs until killed.
        """)

    @Option var host = "127.0.0.1"
    @Option var port: Int

    func run() throws {
        try FloorServer(host: host, port: port).run()
    }
}

/// The floor server's state and loop (one thread). Connections live in slots; epoll events carry the slot.
final class FloorServer {
    private final class Connection {
        let fd: Int32
        var input: [UInt8] = []
        /// Bytes to send; those before `sent` are sent already (a short write keeps the rest in place).
        var output: [UInt8] = []
        var sent = 0
        /// The channel it subscribes to, once it is a subscriber.
        var channel = -1
        var eventSource = false
        /// In the round's list of connections to write.
        var dirty = false
        /// The kernel took less than everything: wait for EPOLLOUT before writing again.
        var blocked = false
        init(fd: Int32) { self.fd = fd }
    }

    private let listener: Int32
    private let epoll: Int32
    private var listening = true
    private var connections: [Connection?] = []
    private var freeSlots: [Int] = []
    /// Slots closed in this round, free for reuse once the round's writes are done (so that the round's list of
    /// connections to write never names a slot twice).
    private var closedSlots: [Int] = []
    private var channelIndex: [String: Int] = [:]
    private var subscribers: [[Int]] = []
    private var dirty: [Int] = []
    private var flushing: [Int] = []

    private static let listenerTag = UInt64.max
    private static let answer = Array("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".utf8)
    private static let blankLine: [UInt8] = [13, 10, 13, 10]

    init(host: String, port: Int) throws {
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw LoadGenError(message: "socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw LoadGenError(message: "not an IPv4 address: \(host)")
        }
        let fd = listener
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 4096) == 0 else {
            throw LoadGenError(message: "bind/listen \(host):\(port): errno \(errno)")
        }
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw LoadGenError(message: "epoll_create1: errno \(errno)") }
        guard watch(listener, tag: Self.listenerTag, events: EPOLLIN.rawValue, operation: EPOLL_CTL_ADD) else {
            throw LoadGenError(message: "epoll_ctl: errno \(errno)")
        }
    }

    func run() throws {
        // A subscriber gone between two rounds is found by its write failing, not by a signal.
        signal(SIGPIPE, SIG_IGN)
        try withEpollBuffers { events, capacity, storage in try loop(events: events, capacity: capacity, storage: storage) }
    }

    private func loop(events: UnsafeMutablePointer<epoll_event>, capacity: Int32,
        storage: UnsafeMutableRawBufferPointer) throws
    {
        while true {
            let ready = epoll_wait(epoll, events, capacity, -1)
            if ready < 0 && errno != EINTR { throw LoadGenError(message: "epoll_wait: errno \(errno)") }
            for i in 0..<max(Int(ready), 0) {
                let tag = events[i].data.u64
                if tag == Self.listenerTag {
                    accept()
                    continue
                }
                let slot = Int(tag)
                if events[i].events & EPOLLOUT.rawValue != 0, let connection = connections[slot] {
                    watch(connection.fd, tag: tag, events: EPOLLIN.rawValue, operation: EPOLL_CTL_MOD)
                    connection.blocked = false
                    markDirty(connection, slot: slot)
                }
                if events[i].events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
                    read(slot: slot, storage: storage)
                }
            }
            flush()
            freeSlots.append(contentsOf: closedSlots)
            closedSlots.removeAll(keepingCapacity: true)
        }
    }

    @discardableResult
    private func watch(_ fd: Int32, tag: UInt64, events: UInt32, operation: Int32) -> Bool {
        var event = epoll_event()
        event.events = events
        event.data.u64 = tag
        return epoll_ctl(epoll, operation, fd, &event) == 0
    }

    private func accept() {
        while true {
            let fd = CNIOLinux_accept4(listener, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            guard fd >= 0 else {
                // Out of descriptors: stop watching the listener (it would be ready on every round) until a
                // connection closes.
                if errno == EMFILE || errno == ENFILE {
                    _ = epoll_ctl(epoll, EPOLL_CTL_DEL, listener, nil)
                    listening = false
                }
                return
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let slot: Int
            if let free = freeSlots.popLast() {
                slot = free
                connections[slot] = Connection(fd: fd)
            } else {
                slot = connections.count
                connections.append(Connection(fd: fd))
            }
            if !watch(fd, tag: UInt64(slot), events: EPOLLIN.rawValue, operation: EPOLL_CTL_ADD) { drop(slot) }
        }
    }

    private func read(slot: Int, storage: UnsafeMutableRawBufferPointer) {
        guard let connection = connections[slot] else { return }
        let n = Glibc.read(connection.fd, storage.baseAddress, storage.count)
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        guard n > 0 else { return drop(slot) }
        // A subscriber's own frames (pongs, a close) are not looked at: the floor never pings.
        guard connection.channel < 0 else { return }
        connection.input.append(contentsOf: UnsafeRawBufferPointer(rebasing: storage[0..<n]))
        requests(of: connection, slot: slot)
    }

    /// Handles every whole request at the start of the connection's input and keeps the rest.
    private func requests(of connection: Connection, slot: Int) {
        var at = 0
        while let headEnd = connection.input.withUnsafeBytes({ raw in
            UnsafeRawBufferPointer(rebasing: raw[at...]).end(of: Self.blankLine).map { at + $0 }
        }) {
            let head = String(decoding: connection.input[at..<headEnd], as: UTF8.self)
            let line = head.utf8.prefix { $0 != 13 }.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            guard line.count >= 2 else { return drop(slot) }
            let path = line[1]
            if line[0] == "GET", path.hasPrefix("/sub/") {
                subscribe(connection, slot: slot, channel: String(path.dropFirst(5)), head: head)
                at = headEnd
                break
            }
            guard line[0] == "POST", path.hasPrefix("/pub/") else { return drop(slot) }
            var length = 0
            for field in head.split(separator: "\r\n") where field.lowercased().hasPrefix("content-length:") {
                length = Int(String(field.dropFirst(15).filter { $0 != " " })) ?? -1
            }
            guard length >= 0 else { return drop(slot) }
            guard connection.input.count - headEnd >= length else { break }
            publish(channel: String(path.dropFirst(5)), body: connection.input[headEnd..<(headEnd + length)])
            connection.output.append(contentsOf: Self.answer)
            markDirty(connection, slot: slot)
            at = headEnd + length
        }
        if at == connection.input.count {
            connection.input.removeAll(keepingCapacity: true)
        } else if at > 0 {
            connection.input.removeFirst(at)
        }
    }

    private func subscribe(_ connection: Connection, slot: Int, channel name: String, head: String) {
        let channel = channelIndex[name] ?? {
            subscribers.append([])
            channelIndex[name] = subscribers.count - 1
            return subscribers.count - 1
        }()
        connection.channel = channel
        subscribers[channel].append(slot)
        if head.lowercased().contains("upgrade: websocket") {
            var key = ""
            for field in head.split(separator: "\r\n") where field.lowercased().hasPrefix("sec-websocket-key:") {
                key = String(field.dropFirst(18).filter { $0 != " " })
            }
            let accept = Base64.encode(Digest.sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            connection.output.append(contentsOf: Array(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n").utf8))
        } else {
            connection.eventSource = true
            connection.output.append(contentsOf: Array(("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + "Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n").utf8))
        }
        markDirty(connection, slot: slot)
    }

    /// Frames the message once per transport its subscribers use and appends it to each subscriber's output.
    private func publish(channel name: String, body: ArraySlice<UInt8>) {
        guard let channel = channelIndex[name] else { return }
        var frame: [UInt8]?
        var event: [UInt8]?
        for slot in subscribers[channel] {
            guard let connection = connections[slot] else { continue }
            if connection.eventSource {
                if event == nil { event = Array("data: ".utf8) + body + [10, 10] }
                connection.output.append(contentsOf: event!)
            } else {
                if frame == nil { frame = Self.textFrame(body) }
                connection.output.append(contentsOf: frame!)
            }
            markDirty(connection, slot: slot)
        }
    }

    /// An unmasked WebSocket text frame of `body`.
    private static func textFrame(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var frame: [UInt8] = [0x81]
        if body.count < 126 {
            frame.append(UInt8(body.count))
        } else if body.count < 65536 {
            frame.append(126)
            frame.append(UInt8(body.count >> 8))
            frame.append(UInt8(body.count & 0xFF))
        } else {
            frame.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((body.count >> shift) & 0xFF)) }
        }
        frame.append(contentsOf: body)
        return frame
    }

    /// Puts the connection on the round's list of writes, unless it is there already or waits for EPOLLOUT.
    private func markDirty(_ connection: Connection, slot: Int) {
        guard !connection.dirty, !connection.blocked else { return }
        connection.dirty = true
        dirty.append(slot)
    }

    /// One write per connection with output. What the kernel does not take waits for EPOLLOUT.
    private func flush() {
        swap(&dirty, &flushing)
        defer { flushing.removeAll(keepingCapacity: true) }
        for slot in flushing {
            guard let connection = connections[slot] else { continue }
            connection.dirty = false
            let count = connection.output.count - connection.sent
            let n = connection.output.withUnsafeBytes { write(connection.fd, $0.baseAddress! + connection.sent, count) }
            if n == count {
                connection.output.removeAll(keepingCapacity: true)
                connection.sent = 0
            } else if n >= 0 || errno == EAGAIN || errno == EINTR {
                connection.sent += max(n, 0)
                connection.blocked = true
                watch(connection.fd, tag: UInt64(slot), events: EPOLLIN.rawValue | EPOLLOUT.rawValue, operation: EPOLL_CTL_MOD)
            } else {
                drop(slot)
            }
        }
    }

    private func drop(_ slot: Int) {
        guard let connection = connections[slot] else { return }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, connection.fd, nil)
        close(connection.fd)
        if connection.channel >= 0, let at = subscribers[connection.channel].firstIndex(of: slot) {
            subscribers[connection.channel].swapAt(at, subscribers[connection.channel].count - 1)
            subscribers[connection.channel].removeLast()
        }
        connections[slot] = nil
        closedSlots.append(slot)
        if !listening {
            listening = watch(listener, tag: Self.listenerTag, events: EPOLLIN.rawValue, operation: EPOLL_CTL_ADD)
        }
    }
}
#endif
