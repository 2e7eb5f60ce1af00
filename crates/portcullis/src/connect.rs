//! `portcullis connect`: a local PostgreSQL port that logs in to the
//! gateway for the user, so `psql -h 127.0.0.1 -p PORT` needs no password.
//!
//! The proxy speaks only the startup phase (SSL negotiation, the startup
//! message, answering the gateway's password request with the token);
//! after that it copies bytes. Each new client connection takes a fresh
//! token, renewing the login when it is about to expire.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use portcullis_pg_wire::encode::{self, Severity};
use portcullis_pg_wire::startup::{parse_startup, StartupPacket};
use portcullis_proto_pg::{PgTarget, Upstream, UpstreamTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::login::fresh_credentials;

/// Options of `portcullis connect`.
pub struct ConnectArgs {
    /// The connection name.
    pub connection: String,
    /// Local port (0: any free port).
    pub port: u16,
    /// The gateway's PostgreSQL address, if not the one stored at login.
    pub gateway_postgres: Option<String>,
    /// CA to verify the gateway with (TLS is then required).
    pub ca: Option<std::path::PathBuf>,
}

/// Runs the local listener until interrupted.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let creds = fresh_credentials().await?;
    let addr = args.gateway_postgres.or(creds.postgres.clone()).context(
        "the gateway did not say where it serves PostgreSQL: pass --gateway-postgres host:port",
    )?;
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    // Tokens cross the network only inside verified TLS; a gateway on this
    // machine may be reached in the clear.
    let tls_mode = if args.ca.is_some() || !loopback {
        UpstreamTls::VerifyFull
    } else {
        UpstreamTls::Disable
    };
    let tls = portcullis_proto_pg::tls::client_config(tls_mode, args.ca.as_deref())
        .context("setting up TLS to the gateway")?;
    let gateway = Arc::new(Upstream::new(
        PgTarget {
            name: args.connection.clone(),
            upstream: addr.clone(),
            database: args.connection.clone(),
            user: creds.user.clone(),
            password: None,
            tls: tls_mode,
            // The gateway's own password request is answered above.
            auth: portcullis_proto_pg::UpstreamAuth::ScramSha256,
            ca_file: args.ca.clone(),
        },
        tls,
        Duration::from_secs(10),
    ));
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    println!(
        "Listening on 127.0.0.1:{port} for {} as {}.",
        args.connection, creds.user
    );
    println!(
        "Connect with: psql -h 127.0.0.1 -p {port} -d {}",
        args.connection
    );
    loop {
        let (client, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let gateway = gateway.clone();
        let connection = args.connection.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_client(client, &gateway, &connection).await {
                eprintln!("portcullis connect: {e:#}");
            }
        });
    }
}

async fn fatal<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: &str) {
    let mut out = BytesMut::new();
    encode::error_response(&mut out, Severity::Fatal, code, message);
    let _ = w.write_all(&out).await;
}

async fn read_startup(client: &mut TcpStream) -> anyhow::Result<(StartupPacket, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            bail!("the client closed before starting up");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((packet, used)) = parse_startup(&buf)? {
            return Ok((packet, buf[..used].to_vec()));
        }
    }
}

async fn serve_client(
    mut client: TcpStream,
    gateway: &Upstream,
    connection: &str,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let (packet, raw) = loop {
        match read_startup(&mut client).await? {
            // The local hop is loopback; the gateway hop has its own TLS.
            (StartupPacket::SslRequest | StartupPacket::GssEncRequest, _) => {
                client.write_all(b"N").await?
            }
            other => break other,
        }
    };
    let params = match packet {
        StartupPacket::Cancel { .. } => {
            let mut g = gateway.open_stream().await?;
            g.write_all(&raw).await?;
            return Ok(());
        }
        StartupPacket::Startup { params, .. } => params,
        _ => bail!("unexpected startup packet"),
    };
    let creds = match fresh_credentials().await {
        Ok(c) => c,
        Err(e) => {
            fatal(&mut client, "28P01", &format!("portcullis connect: {e:#}")).await;
            return Ok(());
        }
    };
    let mut fwd: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "database" && k != "user")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fwd.push(("user", creds.user.as_str()));
    fwd.push(("database", connection));
    let mut upstream = match gateway.open_stream().await {
        Ok(s) => s,
        Err(e) => {
            fatal(
                &mut client,
                "08001",
                &format!("portcullis connect: cannot reach the gateway: {e}"),
            )
            .await;
            return Ok(());
        }
    };
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &fwd);
    upstream.write_all(&out).await?;
    // Answer the gateway's password request; pass everything else on.
    loop {
        let tag = upstream.read_u8().await?;
        let len = upstream.read_u32().await?;
        if !(4..=1 << 20).contains(&len) {
            bail!("the gateway sent a malformed message during login");
        }
        let mut body = vec![0u8; len as usize - 4];
        upstream.read_exact(&mut body).await?;
        if tag == b'R' && body.len() >= 4 && body[..4] == [0, 0, 0, 3] {
            let mut pw = BytesMut::new();
            encode::password(&mut pw, creds.access_token.as_bytes());
            upstream.write_all(&pw).await?;
            continue;
        }
        let mut frame = Vec::with_capacity(len as usize + 1);
        frame.push(tag);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        client.write_all(&frame).await?;
        match tag {
            b'R' if body.len() >= 4 && body[..4] == [0, 0, 0, 0] => break,
            b'R' => {
                bail!("the gateway asked for an authentication method this client does not speak")
            }
            b'E' => return Ok(()),
            _ => {}
        }
    }
    splice(client, upstream).await;
    Ok(())
}

async fn splice<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}
