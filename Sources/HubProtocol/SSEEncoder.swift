import NIOCore

/// Encodes Server-Sent Events (HTML Living Standard §9.2.6, "Interpreting an event stream").
public enum SSEEncoder {
    public enum Error: Swift.Error, Equatable, Sendable {
        /// An `id` or `event` value containing CR, LF (or NUL, for ids): it would end the field early.
        case lineBreakInField(String)
    }

    /// Appends one event: `id:`, `event:`, one `data:` line per line of `data` (split on CRLF, LF and CR, which the
    /// browser joins back with LF), an optional `retry:`, then the blank line that dispatches it.
    public static func writeEvent(
        into buffer: inout ByteBuffer, id: String? = nil, event: String? = nil, data: String, retry: Int? = nil
    ) throws(Error) {
        if let id {
            // The spec ignores an id containing NUL; a line break would end the field early.
            guard !id.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0x00 }) else {
                throw .lineBreakInField("id")
            }
        }
        if let event {
            guard !event.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { throw .lineBreakInField("event") }
        }
        if let id { writeField(&buffer, "id", id) }
        if let event { writeField(&buffer, "event", event) }
        if data.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) {
            for line in lines(data) { writeField(&buffer, "data", line) }
        } else {
            // One line (an event's JSON always is: its line breaks are escaped).
            writeField(&buffer, "data", data)
        }
        if let retry { writeField(&buffer, "retry", String(retry)) }
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// One event in a buffer of its own, ready to be written to every subscriber.
    public static func event(id: String? = nil, event: String? = nil, data: String, retry: Int? = nil) throws(Error) -> ByteBuffer {
        var buffer = ByteBuffer()
        try writeEvent(into: &buffer, id: id, event: event, data: data, retry: retry)
        return buffer
    }

    /// Appends a comment (`: text`), one per line; browsers ignore it, so it keeps proxies and the connection alive.
    public static func writeComment(into buffer: inout ByteBuffer, _ text: String) {
        for line in lines(text) {
            buffer.writeStaticString(":")
            if !line.isEmpty { buffer.writeStaticString(" ") }
            buffer.writeSubstring(line)
            buffer.writeInteger(UInt8(ascii: "\n"))
        }
    }

    /// Appends a lone `retry:` field (the reconnection delay in milliseconds).
    public static func writeRetry(into buffer: inout ByteBuffer, milliseconds: Int) {
        writeField(&buffer, "retry", String(milliseconds))
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    private static func writeField(_ buffer: inout ByteBuffer, _ name: StaticString, _ value: Substring) {
        buffer.writeStaticString(name)
        // One space after the colon: the parser strips exactly one, so a value starting with a space survives.
        buffer.writeStaticString(": ")
        buffer.writeSubstring(value)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    private static func writeField(_ buffer: inout ByteBuffer, _ name: StaticString, _ value: String) {
        writeField(&buffer, name, Substring(value))
    }

    /// Splits on CRLF, LF and CR, the three line endings of the event stream format.
    static func lines(_ text: String) -> [Substring] {
        var result: [Substring] = []
        var start = text.startIndex
        // Iterate over unicode scalars: "\r\n" is a single Character in Swift.
        let scalars = text.unicodeScalars
        var si = scalars.startIndex
        while si != scalars.endIndex {
            let c = scalars[si]
            if c == "\r" || c == "\n" {
                result.append(text[start..<si])
                var next = scalars.index(after: si)
                if c == "\r", next != scalars.endIndex, scalars[next] == "\n" { next = scalars.index(after: next) }
                si = next
                start = si
            } else {
                si = scalars.index(after: si)
            }
        }
        result.append(text[start..<text.endIndex])
        return result
    }
}
