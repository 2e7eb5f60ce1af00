//! The line protocol end to end over real TCP and a real SQLite store:
//! identity, `connect` and per-command policy, recording and kill all
//! come from the core's seam.

use std::sync::Arc;

use portcullis_core::audit::{AuditStore, SessionQuery};
use portcullis_core::{
    Core, GatewayAuthenticator, PolicyEngine, Recorder, SessionSettings, StaticToken, StaticTokens,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const POLICIES: &str = r#"
permit(principal == User::"alice", action in [Action::"connect", Action::"echo"], resource == Connection::"lines");
@id("no-secrets")
forbid(principal, action == Action::"echo", resource) when { context has line && context.line like "*secret*" };
"#;

struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let (read, write) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Client {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    async fn say(&mut self, line: &str) -> Option<String> {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        self.lines.next_line().await.expect("read")
    }
}

#[tokio::test]
async fn a_line_protocol_gets_identity_policy_recording_and_kill_from_the_core() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        portcullis_store::SqliteStore::open(&dir.path().join("audit.db"))
            .await
            .expect("store"),
    );
    let evidence = portcullis_core::EvidenceSettings::new(Arc::new(
        portcullis_core::evidence::Signer::ephemeral().expect("a key"),
    ));
    let (recorder, writer) = Recorder::spawn(store.clone(), evidence)
        .await
        .expect("recorder");
    let tokens = StaticTokens::new(vec![StaticToken {
        user: "alice".into(),
        groups: vec![],
        sha256: Sha256::digest(b"alice-token").into(),
    }]);
    let core = Core {
        authenticator: Arc::new(GatewayAuthenticator::new(
            tokens,
            Vec::new(),
            None,
            Default::default(),
        )),
        policy: Arc::new(
            PolicyEngine::from_text(POLICIES, &[&portcullis_proto_echo::ECHO]).expect("policies"),
        ),
        recorder,
        sessions: Default::default(),
        masking: Arc::new(
            portcullis_core::masking::Masking::new(
                Default::default(),
                portcullis_core::masking::HashKey::new(vec![7; 32]),
            )
            .expect("masking"),
        ),
        settings: SessionSettings::default(),
        reviews: std::sync::Arc::new(portcullis_core::approvals::ReviewBoard::in_memory(
            std::sync::Arc::new(portcullis_core::identity::SystemClock),
            Default::default(),
        )),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(portcullis_proto_echo::serve(
        core.clone(),
        listener,
        shutdown.clone(),
    ));

    // Identity and connect policy come from the core.
    let mut stranger = Client::connect(addr).await;
    let refused = stranger.say("wrong-token lines").await.expect("an answer");
    assert_eq!(
        refused,
        "error portcullis: token authentication failed: the token is not valid"
    );
    let mut elsewhere = Client::connect(addr).await;
    let refused = elsewhere.say("alice-token other").await.expect("an answer");
    assert_eq!(
        refused,
        "error portcullis: connect to other denied for alice (no policy permits it)"
    );

    // Each command is decided in the protocol's own vocabulary.
    let mut alice = Client::connect(addr).await;
    let hello = alice.say("alice-token lines").await.expect("an answer");
    assert!(hello.starts_with("ok "), "{hello}");
    assert_eq!(alice.say("hello").await.as_deref(), Some("echo: hello"));
    assert_eq!(
        alice.say("my secret").await.as_deref(),
        Some("denied: policy no-secrets")
    );

    // A kill reaches the session through the registry the API uses.
    assert_eq!(core.sessions.kill_user("alice"), 1);
    assert_eq!(
        alice.lines.next_line().await.expect("read").as_deref(),
        Some("error portcullis: the session was ended by the gateway")
    );
    assert_eq!(alice.lines.next_line().await.expect("read"), None);

    shutdown.cancel();
    server.await.expect("server");
    drop(core);
    writer.finish().await;

    // Recording comes from the core too: the session, its end, and each
    // command with its decision and the protocol's own detail.
    let sessions = store
        .list_sessions(&SessionQuery::default())
        .await
        .expect("list");
    assert_eq!(sessions.len(), 1, "refused clients start no session");
    let s = &sessions[0];
    assert_eq!(s.session.protocol, "echo");
    assert_eq!(s.session.user, "alice");
    assert_eq!(
        s.end_reason.as_deref(),
        Some("portcullis: the session was ended by the gateway")
    );
    let detail = store
        .session(s.session.id)
        .await
        .expect("read")
        .expect("the session");
    let commands: Vec<(&str, bool)> = detail
        .commands
        .iter()
        .map(|c| (c.text.as_str(), c.decision.allowed))
        .collect();
    assert_eq!(commands, vec![("hello", true), ("my secret", false)]);
    assert_eq!(
        detail.commands[1].decision.policies.as_ref(),
        ["no-secrets".to_owned()]
    );
    assert_eq!(
        detail.commands[0].detail.field("bytes"),
        Some(serde_json::json!(5))
    );
}
