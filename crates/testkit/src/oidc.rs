//! A real OpenID Connect provider (npm `oidc-provider`, see `oidc/`) on a
//! loopback port, and helpers that obtain tokens from it the way real
//! clients do: the authorization-code flow with PKCE through its login
//! form, and the client-credentials grant. HTTP goes through `curl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port};

/// The fixture's directory (with `provider.mjs` and `node_modules`).
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Tokens from the provider's token endpoint.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The whole JSON answer.
    pub json: serde_json::Value,
}

impl TokenSet {
    /// A token field (`id_token`, `access_token`, `refresh_token`).
    pub fn get(&self, name: &str) -> String {
        self.json[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", self.json))
            .to_owned()
    }
}

/// A running provider.
pub struct OidcProvider {
    child: Option<Child>,
    keys: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OidcProvider {
    /// Starts the provider signing with the keys named (first one signs;
    /// `es-` prefixed kids are ES256). Fails loudly when node or the npm
    /// package is missing.
    pub fn start(kids: &[&str]) -> Self {
        let keys = tempfile::Builder::new()
            .prefix("portcullis-oidc-")
            .tempdir()
            .expect("temp dir");
        let mut p = Self {
            child: None,
            keys,
            port: free_port(),
        };
        p.spawn(kids);
        p
    }

    fn spawn(&mut self, kids: &[&str]) {
        let dir = fixture_dir();
        assert!(
            dir.join("node_modules").join("oidc-provider").exists(),
            "the test OIDC provider is not installed: run scripts/install-deps (npm ci in {})",
            dir.display()
        );
        let log = std::fs::File::create(self.keys.path().join("provider.log")).expect("log");
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("OIDC_PORT", self.port.to_string())
            .env("OIDC_KEY_DIR", self.keys.path())
            .env("OIDC_KEY_IDS", kids.join(","))
            .env("OIDC_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("node must be installed (scripts/install-deps)");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "the OIDC provider did not start:\n{}",
            self.log()
        );
    }

    /// Restarts on the same port with another key list: rotation.
    pub fn rotate(&mut self, kids: &[&str]) {
        self.stop();
        self.spawn(kids);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the provider logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.keys.path().join("provider.log")).unwrap_or_default()
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A private signing key the provider generated, as a JWK.
    pub fn private_jwk(&self, kid: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.keys.path().join(format!("{kid}.json")))
            .expect("key file");
        serde_json::from_str(&text).expect("key json")
    }

    /// Logs `user` in through the login form with the authorization-code
    /// flow and PKCE, as a browser would, and redeems the code.
    pub fn login(&self, client_id: &str, user: &str, password: &str) -> TokenSet {
        let redirect = "http://127.0.0.1:9/callback";
        let verifier = "portcullis-test-verifier-0123456789-abcdefghijklmnop";
        let challenge = pkce_s256(verifier);
        let url = format!(
            "{}/auth?client_id={client_id}&response_type=code&scope=openid%20email%20groups%20offline_access\
             &redirect_uri={redirect}&code_challenge={challenge}&code_challenge_method=S256&state=s1&nonce=n1&prompt=consent",
            self.issuer()
        );
        let code = self.authorize(&url, user, password);
        let out = curl(&[
            "-d",
            "grant_type=authorization_code",
            "-d",
            &format!("client_id={client_id}"),
            "-d",
            &format!("code={code}"),
            "-d",
            &format!("redirect_uri={redirect}"),
            "-d",
            &format!("code_verifier={verifier}"),
            &format!("{}/token", self.issuer()),
        ]);
        TokenSet {
            json: serde_json::from_str(&out).unwrap_or_else(|_| panic!("token endpoint: {out}")),
        }
    }

    /// Follows an authorization URL through the login form; returns the
    /// code from the final redirect (which is not followed).
    pub fn authorize(&self, url: &str, user: &str, password: &str) -> String {
        let done = self.authorize_redirect(url, user, password);
        let code = done
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("code="))
            .unwrap_or_else(|| panic!("no code in {done:?}"));
        code.to_owned()
    }

    /// Follows an authorization URL through the login form; returns the
    /// final redirect to the client (not followed).
    pub fn authorize_redirect(&self, url: &str, user: &str, password: &str) -> String {
        let jar = self.keys.path().join(format!("jar-{}", rand_suffix()));
        let jar = jar.to_str().expect("utf8");
        let next = redirect_of(&["-c", jar, "-b", jar, url]);
        assert!(
            next.contains("/interaction/"),
            "expected the login page, got {next:?}"
        );
        let next = self.sign_in(jar, &next, user, password);
        redirect_of(&["-c", jar, "-b", jar, &next])
    }

    /// Posts the login form of the interaction at `interaction_url`;
    /// returns where the provider sends the browser next.
    fn sign_in(&self, jar: &str, interaction_url: &str, user: &str, password: &str) -> String {
        let uid = interaction_url.rsplit('/').next().expect("uid");
        redirect_of(&[
            "-c",
            jar,
            "-b",
            jar,
            "-d",
            &format!("login={user}"),
            "-d",
            &format!("password={password}"),
            &format!("{}/interaction/{uid}/login", self.issuer()),
        ])
    }

    /// Approves a device login (RFC 8628) as the user would in a browser:
    /// the code confirmation page, then the login form.
    pub fn approve_device(&self, verification_uri_complete: &str, user: &str, password: &str) {
        let jar = self.keys.path().join(format!("jar-{}", rand_suffix()));
        let jar = jar.to_str().expect("utf8");
        let page = curl(&["-c", jar, "-b", jar, verification_uri_complete]);
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page
                .find(&marker)
                .unwrap_or_else(|| panic!("no {name} in {page}"))
                + marker.len();
            page[start..].split('"').next().expect("value").to_owned()
        };
        let (xsrf, code) = (field("xsrf"), field("user_code"));
        let device = format!("{}/device", self.issuer());
        let next = redirect_of(&[
            "-c",
            jar,
            "-b",
            jar,
            "-d",
            &format!("xsrf={xsrf}"),
            "-d",
            &format!("user_code={code}"),
            "-d",
            "confirm=yes",
            &device,
        ]);
        let done = self.sign_in(jar, &next, user, password);
        let page = curl(&["-c", jar, "-b", jar, &done]);
        assert!(
            page.contains("Sign-in Success"),
            "device login not approved: {page}"
        );
    }

    /// A client-credentials access token (a JWT for `urn:portcullis`).
    pub fn client_token(&self, client_id: &str) -> String {
        let out = curl(&[
            "-u",
            &format!("{client_id}:{client_id}-secret"),
            "-d",
            "grant_type=client_credentials",
            "-d",
            "scope=db",
            &format!("{}/token", self.issuer()),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|_| panic!("token endpoint: {out}"));
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token: {v}"))
            .to_owned()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs curl silently; returns stdout.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn redirect_of(args: &[&str]) -> String {
    let mut a = vec!["-o", "/dev/null", "-w", "%{redirect_url}"];
    a.extend_from_slice(args);
    let r = curl(&a);
    assert!(!r.is_empty(), "no redirect from curl {args:?}");
    r
}

/// The PKCE S256 challenge, computed by openssl (a real, independent
/// implementation).
fn pkce_s256(verifier: &str) -> String {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(verifier.as_bytes())
        .expect("write");
    let out = c.wait_with_output().expect("openssl");
    base64url(&out.stdout)
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}
