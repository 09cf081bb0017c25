#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import NIOPosix
import XCTest

@testable import HubServer

/// Direct writes on real loopback sockets: the descriptor NIO keeps to itself is found (a NIO update that renames it
/// would silently send every write back through NIO), and what the kernel does not take is reported exactly.
final class SocketOutputTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var server: Channel!
    var accepted: EventLoopPromise<Channel>!
    var client: CInt = -1

    override func setUpWithError() throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let accepted = group.next().makePromise(of: Channel.self)
        self.accepted = accepted
        server = try ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.succeed(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    override func tearDownWithError() throws {
        if client >= 0 { close(client) }
        try server.close().wait()
        try group.syncShutdownGracefully()
    }

    /// Connects a plain socket (with a small receive buffer when asked) and returns the hub side's channel.
    func connect(receiveBuffer: CInt? = nil) throws -> Channel {
        client = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(client, 0)
        if var size = receiveBuffer {
            setsockopt(client, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.localAddress!.port!).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(result, 0)
        return try accepted.futureResult.wait()
    }

    /// Reads exactly `count` bytes from the client socket.
    func receive(_ count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < count {
            let n = recv(client, &chunk, min(chunk.count, count - bytes.count), 0)
            guard n > 0 else {
                XCTFail("recv returned \(n) after \(bytes.count) of \(count) bytes")
                return bytes
            }
            bytes += chunk[0..<n]
        }
        return bytes
    }

    func testTheDescriptorOfAnAcceptedChannelIsFoundAndItsWritesArrive() throws {
        let channel = try connect()
        var output = SocketOutput()
        output.attach(to: channel)
        XCTAssertGreaterThanOrEqual(output.descriptor, 0)
        // Attached, but nothing goes directly until NIO has said it holds nothing.
        XCTAssertFalse(output.direct)
        output.drained(at: output.handedOff)
        XCTAssertTrue(output.direct)

        XCTAssertEqual(output.send(ByteBuffer(string: "one;")), 4)
        var frames = [ByteBuffer(string: "two;"), ByteBuffer(), ByteBuffer(string: "three;")]
        XCTAssertEqual(output.send(&frames), 3)
        XCTAssertEqual(String(decoding: receive(14), as: UTF8.self), "one;two;three;")

        // A write handed to NIO holds direct writes back until a watch started after it completes.
        output.handOff()
        let mark = output.handedOff
        XCTAssertFalse(output.direct)
        output.handOff()
        output.drained(at: mark)
        XCTAssertFalse(output.direct, "a watch that started before the last hand-off does not release")
        output.drained(at: output.handedOff)
        XCTAssertTrue(output.direct)
    }

    func testAChannelWithoutASocketHasNoDescriptor() {
        XCTAssertNil(SocketOutput.descriptor(of: EmbeddedChannel()))
        var output = SocketOutput()
        output.attach(to: EmbeddedChannel())
        XCTAssertFalse(output.direct)
        output.handOff()
        XCTAssertFalse(output.direct)
    }

    func testWhatTheKernelDoesNotTakeIsLeftInTheBuffersInOrder() throws {
        let channel = try connect(receiveBuffer: 4096)
        var output = SocketOutput()
        output.attach(to: channel)
        output.drained(at: output.handedOff)
        // 16 KiB frames of a counting pattern until the kernel stops taking them (the client does not read).
        var sent = 0
        let pattern = (0..<(16384 + 251)).map { UInt8($0 % 251) }
        var next = 0
        func frame() -> ByteBuffer {
            defer { next = (next + 16384) % 251 }
            return ByteBuffer(bytes: pattern[next..<(next + 16384)])
        }
        var partial: ByteBuffer?
        for _ in 0..<10_000 {
            var buffer = frame()
            let went = output.send(buffer)
            XCTAssertGreaterThanOrEqual(went, 0)
            sent += went
            if went < 16384 {
                buffer.moveReaderIndex(forwardBy: went)
                partial = buffer
                break
            }
        }
        var rest = try XCTUnwrap(partial, "the kernel took 160 MB from a reader that does not read")
        XCTAssertGreaterThan(sent, 0)
        // Full now: a batch sends nothing and leaves every frame as it was.
        var batch = [rest, frame(), frame()]
        XCTAssertEqual(output.send(&batch), 0)
        XCTAssertEqual(batch.map(\.readableBytes), [rest.readableBytes, 16384, 16384])
        // The reader drains what went; then the rest follows, in order, through a batch.
        var expected: UInt8 = 0
        /// The index of the first byte off the pattern, nil when all follow it.
        func firstOffPattern(_ bytes: [UInt8]) -> Int? {
            for (index, byte) in bytes.enumerated() {
                if byte != expected { return index }
                expected = expected == 250 ? 0 : expected + 1
            }
            return nil
        }
        XCTAssertNil(firstOffPattern(receive(sent)))
        let remaining = batch.reduce(0) { $0 + $1.readableBytes }
        var went = 0
        while went < remaining {
            let before = batch.reduce(0) { $0 + $1.readableBytes }
            let first = try XCTUnwrap(output.send(&batch))
            let after = batch[first...].reduce(0) { $0 + $1.readableBytes }
            went += before - after
            batch.removeFirst(first)
            // Drain what this call sent, so the next one has room.
            if let index = firstOffPattern(receive(before - after)) { return XCTFail("byte \(went + index) is wrong") }
        }
        XCTAssertTrue(batch.isEmpty)
        rest = ByteBuffer()
        XCTAssertEqual(output.send(rest), 0)
    }

    func testASocketThatFailedIsGivenUp() throws {
        let channel = try connect()
        var output = SocketOutput()
        output.attach(to: channel)
        output.drained(at: output.handedOff)
        // The peer resets the connection (SO_LINGER 0), then sends fail with ECONNRESET or EPIPE.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(client)
        client = -1
        var result = 0
        for _ in 0..<1000 where result >= 0 {
            result = output.send(ByteBuffer(string: "after the reset"))
        }
        XCTAssertEqual(result, -1)
        // A batch fails the same way, and gives the socket up.
        var frames = [ByteBuffer(string: "after"), ByteBuffer(string: "the reset")]
        XCTAssertNil(output.send(&frames))
        XCTAssertEqual(output.descriptor, -1)
        XCTAssertFalse(output.direct)
    }
}
