import ArgumentParser
import HubCore

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mint a development token for watchers (HS256, signed with the hub's token secret).")

    @Option(help: "Secret, as given to hub serve (HUB_TOKEN_SECRET).") var secret: String?
    @Option(help: "The token's subject (sub claim).") var sub = "developer"
    @Option(name: .customLong("workspace"), help: "A workspace the token grants; repeat for several.")
    var workspaces: [String] = []
    @Option(help: "Seconds until the token expires.") var ttl: Int = 3600

    func run() throws {
        guard let secret = try setting(secret, env: "HUB_TOKEN_SECRET", parse: { $0 }), secret.utf8.count >= 16 else {
            throw ValidationError("a secret of at least 16 bytes is required: --secret or HUB_TOKEN_SECRET")
        }
        guard !workspaces.isEmpty else { throw ValidationError("name at least one --workspace") }
        guard ttl > 0 else { throw ValidationError("--ttl must be more than 0 seconds") }
        let exp = unixSeconds() + Int64(ttl)
        print(TokenVerifier(secret: Array(secret.utf8)).mint(subject: sub, workspaces: workspaces, expiresAt: exp))
    }
}
