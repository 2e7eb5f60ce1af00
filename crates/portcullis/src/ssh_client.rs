//! `portcullis ssh` and the SSH half of `portcullis login`: a key of the
//! user's own (made once, 0600, in the config directory), certified by the
//! gateway's SSH CA for as long as the token allows, so plain `ssh` needs
//! no password.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::credentials::config_dir;

/// A certified key, ready for `ssh -i`.
pub struct CertifiedKey {
    /// The private key.
    pub key: PathBuf,
    /// Its certificate (`KEY-cert.pub`, where ssh looks for it).
    pub certificate: PathBuf,
    /// The gateway's SSH port.
    pub ssh_port: u16,
}

/// The user's key, made on first use.
fn user_key() -> anyhow::Result<(PathBuf, String)> {
    let path = config_dir()?.join("ssh").join("id_ed25519");
    let key = portcullis_proto_ssh::host_key::load_or_generate(&path)
        .with_context(|| format!("making the SSH key {}", path.display()))?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the public key")?;
    Ok((path, public))
}

/// Asks the gateway at `api` (its API URL) for a certificate of the
/// user's key, with `token`, and writes it beside the key.
pub async fn certify(api: &str, token: &str) -> anyhow::Result<CertifiedKey> {
    let (key, public) = user_key()?;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/ssh/certificate", api.trim_end_matches('/')))
        .bearer_auth(token)
        .json(&json!({ "public_key": public }))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway API at {api}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the API answered with invalid JSON")?;
    if !status.is_success() {
        bail!(
            "no SSH certificate ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    let line = body["certificate"]
        .as_str()
        .context("no certificate in the answer")?;
    let ssh_port = body["ssh_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("no SSH port in the answer")?;
    let mut name = key.clone().into_os_string();
    name.push("-cert.pub");
    let certificate = PathBuf::from(name);
    std::fs::write(&certificate, format!("{line}\n"))
        .with_context(|| format!("writing {}", certificate.display()))?;
    Ok(CertifiedKey {
        key,
        certificate,
        ssh_port,
    })
}

/// What `portcullis ssh` was asked.
pub struct SshArgs {
    /// The connection (the SSH user name at the gateway).
    pub connection: String,
    /// The API to ask; the stored login's gateway otherwise.
    pub api: Option<String>,
    /// A token to use; the stored login's otherwise.
    pub token: Option<String>,
    /// Arguments passed on to `ssh` (a command, `-L …`).
    pub rest: Vec<String>,
}

/// Certifies the key, then becomes `ssh` to the connection.
pub async fn run(args: SshArgs) -> anyhow::Result<()> {
    let (api, token) = match (args.api, args.token) {
        (Some(api), Some(token)) => (api, token),
        (api, token) => {
            let stored = crate::login::fresh_credentials()
                .await
                .context("no token: pass --token (or log in with `portcullis login`)")?;
            (
                api.unwrap_or(stored.gateway),
                token.unwrap_or(stored.access_token),
            )
        }
    };
    let host = reqwest::Url::parse(&api)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .with_context(|| format!("{api:?} is not a URL"))?;
    let certified = certify(&api, &token).await?;
    let (options, command) = args.rest.split_at(options_end(&args.rest));
    let error = std::process::Command::new("ssh")
        .arg("-i")
        .arg(&certified.key)
        .arg("-o")
        .arg(format!(
            "CertificateFile={}",
            certified.certificate.display()
        ))
        .args(["-o", "IdentitiesOnly=yes", "-p"])
        .arg(certified.ssh_port.to_string())
        .args(options)
        .arg(format!("{}@{host}", args.connection))
        .args(command)
        .exec();
    Err(error).context("running ssh")
}

/// Where ssh's own options end in `args` (the destination goes there):
/// at the first word that is neither an option nor the value of one.
fn options_end(args: &[String]) -> usize {
    // The options of OpenSSH 9 that take a value.
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        let takes_value = flags
            .char_indices()
            .find(|(_, c)| WITH_VALUE.contains(*c))
            .is_some_and(|(at, _)| at + 1 == flags.len());
        i += if takes_value { 2 } else { 1 };
    }
    i.min(args.len())
}

#[cfg(test)]
mod tests {
    use super::options_end;

    fn end(args: &[&str]) -> usize {
        options_end(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_destination_goes_after_ssh_options_and_before_the_command() {
        assert_eq!(end(&["uptime"]), 0);
        assert_eq!(end(&["-o", "BatchMode=yes", "uptime", "-a"]), 2);
        assert_eq!(end(&["-tt", "-L", "1:h:2", "-N"]), 4);
        assert_eq!(end(&["-oBatchMode=yes", "-v", "ls", "-l"]), 2);
        assert_eq!(end(&["-vL", "1:h:2", "ls"]), 2);
    }
}
