//! Opening an authenticated session on the upstream with the service credential.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use portcullis_pg_wire::{encode, AuthRequest, BackendMessage, TransactionStatus};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::SessionError;
use crate::framed::read_message;
use crate::scram::{ChannelBinding, SaltedPasswordCache, ScramClient};
use crate::stream::Stream;
use crate::target::{PgTarget, UpstreamAuth, UpstreamTls};

/// Largest message accepted while logging in upstream.
const SETUP_MESSAGE_LIMIT: usize = 1 << 20;

/// An upstream session ready for queries.
pub struct UpstreamSession {
    /// The connection.
    pub stream: Stream,
    /// Bytes already read past ReadyForQuery (normally none).
    pub leftover: BytesMut,
    /// ParameterStatus values the server reported, in order.
    pub params: Vec<(String, String)>,
    /// The upstream backend's cancel key.
    pub key: (i32, i32),
    /// Transaction status at ReadyForQuery.
    pub status: TransactionStatus,
    /// The schemas of the effective search_path that exist, in order
    /// (`current_schemas(false)`), for resolving unqualified names.
    pub search_path: Vec<String>,
    /// The raw `search_path` setting, which may name schemas not yet created.
    pub search_path_setting: String,
}

/// A target with its TLS configuration prepared once.
pub struct Upstream {
    /// The configured target.
    pub target: PgTarget,
    /// TLS towards it, if any.
    pub tls: Option<Arc<ClientConfig>>,
    /// Time allowed to connect and log in.
    pub connect_timeout: Duration,
    scram_cache: SaltedPasswordCache,
    /// The latest view catalog, with the fingerprint it was read at:
    /// sessions whose login reports the same fingerprint reuse it.
    pub views: Arc<portcullis_pg_decide::catalog::SharedCatalog>,
    /// Whether masking traces columns of this connection, so the catalog
    /// read includes relations and columns.
    pub traces_columns: bool,
}

/// How often the watcher asks for the catalog fingerprint.
const CATALOG_POLL: Duration = Duration::from_secs(1);

impl Upstream {
    /// An upstream for `target`.
    pub fn new(
        target: PgTarget,
        tls: Option<Arc<ClientConfig>>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            target,
            tls,
            connect_timeout,
            scram_cache: SaltedPasswordCache::default(),
            views: Arc::default(),
            traces_columns: false,
        }
    }

    /// Opens a TCP (and TLS, if configured) connection to the upstream.
    pub async fn open_stream(&self) -> Result<Stream, SessionError> {
        let t = &self.target;
        let tcp = TcpStream::connect(&t.upstream).await.map_err(|e| {
            SessionError::upstream(format!("cannot reach upstream of {}: {e}", t.name))
        })?;
        tcp.set_nodelay(true)?;
        crate::stream::keepalive(&tcp);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        encode::ssl_request(&mut req);
        tcp.write_all(&req).await?;
        let answer = tcp.read_u8().await?;
        if answer != b'S' {
            return Err(SessionError::upstream(format!(
                "upstream of {} does not accept TLS, which this connection requires",
                t.name
            )));
        }
        let name = ServerName::try_from(t.host().to_owned()).map_err(|_| {
            SessionError::upstream(format!("invalid upstream host name for {}", t.name))
        })?;
        let conn = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                SessionError::upstream(format!("TLS to upstream of {} failed: {e}", t.name))
            })?;
        Ok(Stream::ClientTls(Box::new(conn)))
    }

    /// Connects and logs in, passing on the client's harmless startup
    /// parameters (application_name, DateStyle, …).
    pub async fn login(
        &self,
        client_params: &[(&str, &str)],
    ) -> Result<UpstreamSession, SessionError> {
        tokio::time::timeout(self.connect_timeout, self.login_inner(client_params))
            .await
            .map_err(|_| {
                SessionError::upstream(format!(
                    "upstream of {} did not answer in time",
                    self.target.name
                ))
            })?
    }

    async fn login_inner(
        &self,
        client_params: &[(&str, &str)],
    ) -> Result<UpstreamSession, SessionError> {
        let t = &self.target;
        let mut stream = self.open_stream().await?;
        let mut params: Vec<(&str, &str)> = vec![("user", &t.user), ("database", &t.database)];
        params.extend_from_slice(client_params);
        let mut out = BytesMut::new();
        encode::startup_message(&mut out, &params);
        stream.write_all(&out).await?;
        stream.flush().await?;

        let mut buf = BytesMut::with_capacity(8192);
        let binding = match (stream.is_tls(), stream.channel_binding()) {
            (_, Some(data)) => Binding::Available(data),
            (true, None) => Binding::Unknown,
            (false, None) => Binding::NoTls,
        };
        let mut scram: Option<ScramClient> = None;
        let mut server_params = Vec::new();
        let mut key = (0, 0);
        loop {
            let (tag, body) = read_message(&mut stream, &mut buf, SETUP_MESSAGE_LIMIT).await?;
            match BackendMessage::decode(tag, &body)? {
                BackendMessage::Authentication(req) => {
                    out.clear();
                    self.answer_auth(req, &binding, &mut scram, &mut out)?;
                    if !out.is_empty() {
                        stream.write_all(&out).await?;
                        stream.flush().await?;
                    }
                }
                BackendMessage::ParameterStatus { name, value } => {
                    server_params.push((name.to_owned(), value.to_owned()));
                }
                BackendMessage::BackendKeyData { pid, secret } => key = (pid, secret),
                BackendMessage::NoticeResponse(_) | BackendMessage::NegotiateProtocolVersion(_) => {
                }
                BackendMessage::ReadyForQuery(status) => {
                    let (search_path, search_path_setting, fingerprint) =
                        self.fetch_search_path(&mut stream, &mut buf).await?;
                    // Refreshes the connection's shared catalog if it moved.
                    self.views_at(&fingerprint, &mut stream, &mut buf).await?;
                    return Ok(UpstreamSession {
                        stream,
                        leftover: buf,
                        params: server_params,
                        key,
                        status,
                        search_path,
                        search_path_setting,
                    });
                }
                BackendMessage::ErrorResponse(e) => {
                    let code = e.code().unwrap_or("?");
                    let msg = e.message().unwrap_or("");
                    tracing::warn!(connection = %t.name, code, message = msg, "upstream refused login");
                    // Authentication failures name the service user; the
                    // client learns only that the service credential failed.
                    let text = if code.starts_with("28") {
                        format!(
                            "the upstream of {} refused the gateway's service credential",
                            t.name
                        )
                    } else {
                        format!("the upstream of {} refused the session: {msg}", t.name)
                    };
                    return Err(SessionError::upstream(text));
                }
                other => {
                    return Err(SessionError::upstream(format!(
                        "unexpected message from upstream of {} during login: {other:?}",
                        t.name
                    )))
                }
            }
        }
    }

    /// The view catalog as of `fingerprint`: the cached one if the catalog
    /// has not changed since it was read, else read afresh on `stream`.
    async fn views_at(
        &self,
        fingerprint: &str,
        stream: &mut Stream,
        buf: &mut BytesMut,
    ) -> Result<Arc<portcullis_pg_decide::catalog::ViewCatalog>, SessionError> {
        if let Some(views) = self.views.at(fingerprint) {
            return Ok(views);
        }
        let views = Arc::new(self.fetch_views(stream, buf).await?);
        self.views.install(fingerprint, views.clone());
        Ok(views)
    }

    /// One watcher connection: polls until it fails.
    async fn catalog_round(
        &self,
        connected: &mut bool,
    ) -> Result<std::convert::Infallible, SessionError> {
        let mut session = self.login(&[]).await?;
        *connected = true;
        let mut buf = std::mem::take(&mut session.leftover);
        loop {
            tokio::time::sleep(CATALOG_POLL).await;
            let (_, _, fp) = self
                .fetch_search_path(&mut session.stream, &mut buf)
                .await?;
            self.views_at(&fp, &mut session.stream, &mut buf).await?;
        }
    }

    /// Keeps [`Upstream::views`] fresh while sessions run, so a view
    /// created or changed by anyone is resolved within about a second:
    /// one connection of the service user asks for the catalog fingerprint
    /// every second and rereads the dependencies when it moves.
    pub async fn watch_catalog(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        // Warn when a working watcher breaks, not on every retry while the
        // upstream stays down.
        let mut failing = false;
        loop {
            let mut connected = false;
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.catalog_round(&mut connected) => r,
            };
            let Err(e) = outcome;
            if connected || !failing {
                tracing::warn!(connection = %self.target.name, error = %e, "watching the view catalog failed; retrying");
            }
            failing = true;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Reads the database's views and their dependencies.
    async fn fetch_views(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
    ) -> Result<portcullis_pg_decide::catalog::ViewCatalog, SessionError> {
        let mut out = BytesMut::new();
        if self.traces_columns {
            let sql = format!(
                "{}{}",
                portcullis_pg_decide::catalog::VIEW_DEPENDENCIES_SQL,
                portcullis_pg_decide::catalog::MASKING_CATALOG_SQL
            );
            encode::query(&mut out, &sql);
        } else {
            encode::query(
                &mut out,
                portcullis_pg_decide::catalog::VIEW_DEPENDENCIES_SQL,
            );
        }
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut rows = Vec::new();
        loop {
            let (tag, body) = read_message(stream, buf, SETUP_MESSAGE_LIMIT).await?;
            match BackendMessage::decode(tag, &body)? {
                BackendMessage::DataRow(row) => {
                    let cols: Vec<String> = text_columns(row)
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect();
                    if let Ok(row) = <[String; 5]>::try_from(cols) {
                        rows.push(row);
                    }
                }
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::ErrorResponse(e) => {
                    // Without the catalog, views could not be resolved:
                    // refuse the session rather than decide blind.
                    return Err(SessionError::upstream(format!(
                        "the upstream of {} could not list its views: {}",
                        self.target.name,
                        e.message().unwrap_or("")
                    )));
                }
                _ => {}
            }
        }
        Ok(portcullis_pg_decide::catalog::ViewCatalog::from_rows(rows))
    }

    /// Asks the fresh session which schemas its search_path resolves to.
    async fn fetch_search_path(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
    ) -> Result<(Vec<String>, String, String), SessionError> {
        let mut out = BytesMut::new();
        let columns = if self.traces_columns {
            portcullis_pg_decide::catalog::COLUMN_FINGERPRINT_SQL
        } else {
            ""
        };
        let sql = format!(
            "SELECT pg_catalog.current_schemas(false)::text, pg_catalog.current_setting('search_path'), {}{columns}",
            portcullis_pg_decide::catalog::CATALOG_FINGERPRINT_SQL
        );
        encode::query(&mut out, &sql);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut value = None;
        loop {
            let (tag, body) = read_message(stream, buf, SETUP_MESSAGE_LIMIT).await?;
            match BackendMessage::decode(tag, &body)? {
                BackendMessage::DataRow(row) => {
                    let mut cols = text_columns(row).into_iter();
                    if let (Some(Some(a)), Some(Some(b)), Some(Some(c))) =
                        (cols.next(), cols.next(), cols.next())
                    {
                        value = Some((a, b, c));
                    }
                }
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::ErrorResponse(e) => {
                    return Err(SessionError::upstream(format!(
                        "the upstream of {} could not report its search_path: {}",
                        self.target.name,
                        e.message().unwrap_or("")
                    )))
                }
                _ => {}
            }
        }
        let text = value.ok_or_else(|| {
            SessionError::upstream(format!(
                "the upstream of {} did not report its search_path",
                self.target.name
            ))
        })?;
        let (array, setting, fingerprint) = text;
        Ok((parse_name_array(&array), setting, fingerprint))
    }

    fn answer_auth(
        &self,
        req: AuthRequest<'_>,
        binding: &Binding,
        scram: &mut Option<ScramClient>,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        let t = &self.target;
        let password = || {
            t.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| {
                    SessionError::upstream(format!(
                        "the upstream of {} asks for a password and none is configured",
                        t.name
                    ))
                })
        };
        let refuse = |method: &str, needs: &str| {
            SessionError::upstream(format!(
                "the upstream of {} asks for {method}, which this connection does not answer ({needs}); the service password was not sent",
                t.name
            ))
        };
        match req {
            AuthRequest::Ok => {}
            AuthRequest::Cleartext
                if t.auth != UpstreamAuth::Password || t.tls != UpstreamTls::VerifyFull =>
            {
                return Err(refuse(
                    "the password in clear",
                    "it needs upstream_auth = \"password\" and upstream_tls = \"verify-full\"",
                ))
            }
            AuthRequest::Md5 { .. } if t.auth == UpstreamAuth::ScramSha256 => {
                return Err(refuse("md5", "it needs upstream_auth = \"md5\""))
            }
            AuthRequest::Cleartext => encode::password(out, password()?),
            AuthRequest::Md5 { salt } => {
                let hash = md5_hash(t.user.as_bytes(), password()?, salt);
                encode::password(out, hash.as_bytes());
            }
            AuthRequest::Sasl { mechanisms } => {
                // Bound to the TLS connection wherever the server offers it;
                // over TLS without its offer, say so (`y`), so a server that
                // would have offered it (behind a downgrade) refuses.
                let plus = mechanisms.contains(&"SCRAM-SHA-256-PLUS");
                let cb = match binding {
                    Binding::Available(data) if plus => {
                        ChannelBinding::ServerEndPoint(data.clone())
                    }
                    Binding::Available(_) => ChannelBinding::NotOffered,
                    Binding::Unknown | Binding::NoTls => ChannelBinding::None,
                };
                if !mechanisms.contains(&cb.mechanism()) {
                    return Err(SessionError::upstream(format!(
                        "the upstream of {} offers no supported SASL mechanism ({})",
                        t.name,
                        mechanisms.join(", ")
                    )));
                }
                let s = ScramClient::bound(cb);
                encode::sasl_initial_response(out, s.mechanism(), &s.client_first());
                *scram = Some(s);
            }
            AuthRequest::SaslContinue(data) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| SessionError::upstream("SASL challenge out of order".into()))?;
                let reply = s
                    .client_final(data, password()?, &self.scram_cache)
                    .map_err(|e| {
                        SessionError::upstream(format!(
                            "SCRAM exchange with upstream of {} failed: {e}",
                            t.name
                        ))
                    })?;
                encode::sasl_response(out, &reply);
            }
            AuthRequest::SaslFinal(data) => {
                let s = scram
                    .take()
                    .ok_or_else(|| SessionError::upstream("SASL outcome out of order".into()))?;
                // Verifies the server knows the password too (mutual auth).
                s.verify_server_final(data).map_err(|e| {
                    SessionError::upstream(format!(
                        "upstream of {} failed SCRAM server proof: {e}",
                        t.name
                    ))
                })?;
            }
            AuthRequest::Other(code) => {
                return Err(SessionError::upstream(format!(
                    "the upstream of {} asks for unsupported authentication method {code}",
                    t.name
                )))
            }
        }
        Ok(())
    }

    /// Sends a CancelRequest for the upstream backend with `key`.
    pub async fn cancel(&self, key: (i32, i32)) -> Result<(), SessionError> {
        let mut stream = self.open_stream().await?;
        let mut out = BytesMut::new();
        encode::cancel_request(&mut out, key.0, key.1);
        stream.write_all(&out).await?;
        stream.flush().await?;
        // The server closes the connection when done; wait briefly for that
        // so the cancel is delivered before we drop the socket.
        let mut b = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut b)).await;
        Ok(())
    }
}

/// The columns of a text-format DataRow (`None` for NULL or bad bytes).
pub(crate) fn text_columns(row: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let Some(count) = row.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return out;
    };
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = row
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        at += 4;
        match usize::try_from(len) {
            Ok(n) => {
                out.push(
                    row.get(at..at + n)
                        .and_then(|b| String::from_utf8(b.to_vec()).ok()),
                );
                at += n;
            }
            Err(_) => out.push(None),
        }
    }
    out
}

/// Parses a PostgreSQL `name[]` literal such as `{app,"my schema",public}`.
pub fn parse_name_array(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for c in inner.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            any = true;
        } else if c == ',' && !quoted {
            out.push(std::mem::take(&mut cur));
            any = false;
        } else {
            cur.push(c);
            any = true;
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_name_array;

    #[test]
    fn name_arrays() {
        assert_eq!(parse_name_array("{public}"), vec!["public"]);
        assert_eq!(parse_name_array("{app,public}"), vec!["app", "public"]);
        assert_eq!(
            parse_name_array(r#"{"my schema","a\"b",public}"#),
            vec!["my schema", "a\"b", "public"]
        );
        assert!(parse_name_array("{}").is_empty());
    }
}

/// The answer to an MD5 password request: `md5` and the hex MD5 of the hex
/// MD5 of password and user, salted (PostgreSQL's `pg_md5_encrypt` twice).
/// Written here on the RustCrypto MD5 that the SHA-2 code shares its
/// traits with, rather than taking postgres-protocol for one function.
fn md5_hash(user: &[u8], password: &[u8], salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let inner = hex::encode(
        Md5::new()
            .chain_update(password)
            .chain_update(user)
            .finalize(),
    );
    let outer = Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("md5{}", hex::encode(outer))
}

#[cfg(test)]
mod md5_tests {
    /// The answer for user `md5_user`, password `secret` and salt
    /// 01 02 03 04, computed independently (Python's hashlib) with
    /// PostgreSQL's algorithm: md5(hex(md5(password || user)) || salt).
    #[test]
    fn md5_answers_as_postgresql_expects() {
        assert_eq!(
            super::md5_hash(b"md5_user", b"secret", [1, 2, 3, 4]),
            "md530d9d09f02a72e0bbede8eccf68ddabc"
        );
    }
}

/// What the upstream connection offers SCRAM to bind to.
enum Binding {
    /// TLS, with the certificate's hash.
    Available(Vec<u8>),
    /// TLS, but its certificate names no hash the gateway knows.
    Unknown,
    /// Plain TCP.
    NoTls,
}
