//! What a session channel asks to run, classified by effect into the
//! action policy decides. Pure: no I/O.
//!
//! The one subtle case is scp. Legacy scp (`scp -O`, and every scp before
//! OpenSSH 9) runs `scp -t PATH` or `scp -f PATH` as an exec, through the
//! remote user's shell. It is decided as `ssh_sftp` (with the path) only
//! when the whole command is exactly that, in characters no shell treats
//! specially, and with no `..` in the path; anything else
//! (`scp -t x; rm -rf ~`) is an `ssh_exec`. Because sshd still runs it
//! through the login shell (and `~/.ssh/rc`), legacy scp needs `ssh_exec`
//! as well (`channel.rs`, `decide`): a file-transfer permit alone never
//! runs a command.

use portcullis_core::policy::ContextValue;
use portcullis_core::{Action, RequestFacts};

use crate::vocabulary::{COMMAND, EXEC, PATH, SFTP, SHELL};

/// A session channel's request, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRequest {
    /// `shell`.
    Shell,
    /// `exec`, with its command.
    Exec(String),
    /// `subsystem`, with its name.
    Subsystem(String),
    /// `exec` with a command that is not UTF-8: policy would judge other
    /// text than the server runs, so it is refused.
    NotUtf8Exec,
}

/// What policy decides for a request, and how it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The action decided.
    pub action: Action,
    /// The record's kind: `shell`, `exec`, `scp`, `sftp`.
    pub kind: &'static str,
    /// The record's text: the command, or the request's name.
    pub text: String,
    /// The remote path, for legacy scp.
    pub path: Option<String>,
}

impl ChannelRequest {
    /// Classifies the request, or says why it is not run at all.
    pub fn classify(&self) -> Result<Classified, String> {
        Ok(match self {
            ChannelRequest::Shell => Classified {
                action: SHELL,
                kind: "shell",
                text: "shell".into(),
                path: None,
            },
            ChannelRequest::Exec(command) => match legacy_scp_path(command) {
                Some(path) => Classified {
                    action: SFTP,
                    kind: "scp",
                    text: command.clone(),
                    path: Some(path),
                },
                None => Classified {
                    action: EXEC,
                    kind: "exec",
                    text: command.clone(),
                    path: None,
                },
            },
            ChannelRequest::Subsystem(name) if name == "sftp" => Classified {
                action: SFTP,
                kind: "sftp",
                text: "subsystem sftp".into(),
                path: None,
            },
            ChannelRequest::Subsystem(name) => {
                return Err(format!(
                    "portcullis: the subsystem {name:?} is not offered (only sftp is)"
                ))
            }
            ChannelRequest::NotUtf8Exec => {
                return Err("portcullis: the command is not UTF-8; it is refused".into())
            }
        })
    }
}

impl Classified {
    /// The request's facts for policy.
    pub fn facts(&self, base: &RequestFacts) -> RequestFacts {
        let mut facts = base.clone();
        if self.action != SHELL && self.kind != "sftp" {
            facts = facts.with(COMMAND, ContextValue::Str(self.text.clone()));
        }
        if let Some(path) = &self.path {
            facts = facts.with(PATH, ContextValue::Str(path.clone()));
        }
        facts
    }
}

/// The path of a legacy scp command (`scp [-dfprtv]… [--] PATH`, exactly
/// one of `-t` (to the server) or `-f` (from it)); `None` for anything
/// else, which is then decided as the exec it is. The path is a bare word of characters no shell expands, or one
/// single-quoted word without a quote inside (scp quotes paths that way).
pub fn legacy_scp_path(command: &str) -> Option<String> {
    let mut rest = command.strip_prefix("scp ")?;
    let mut direction = 0;
    loop {
        rest = rest.trim_start_matches(' ');
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if word == "--" {
            rest = after;
            break;
        }
        let Some(flags) = word.strip_prefix('-') else {
            break;
        };
        if flags.is_empty() || !flags.chars().all(|c| "dfprtv".contains(c)) {
            return None;
        }
        direction += flags.chars().filter(|c| *c == 't' || *c == 'f').count();
        rest = after;
    }
    if direction != 1 {
        return None;
    }
    // What is left is the one path word (a quoted one may hold spaces).
    plain_word(rest.trim_start_matches(' '))
}

/// `word` as the shell would pass it, when it needs no expansion. A path
/// with a `..` component is not one: what it names depends on symlinks
/// only the server can resolve, so a policy on `context.path` could not
/// hold (`/srv/pub/../../root/.ssh`).
fn plain_word(word: &str) -> Option<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._/+-@:,=%".contains(c);
    let path = match word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
        Some(inner) if !inner.contains('\'') => inner,
        Some(_) => return None,
        None if !word.is_empty() && word.chars().all(safe) => word,
        None => return None,
    };
    (!path.split('/').any(|part| part == "..")).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_is_a_transfer_only_when_it_is_exactly_scp() {
        assert_eq!(legacy_scp_path("scp -t /tmp/x"), Some("/tmp/x".into()));
        assert_eq!(legacy_scp_path("scp -v -f -- a.txt"), Some("a.txt".into()));
        assert_eq!(legacy_scp_path("scp -pt 'my file'"), Some("my file".into()));
        for not_scp in [
            "scp -t /tmp/x; rm -rf ~",
            "scp -t /tmp/x && id",
            "scp -t $(id)",
            "scp -t `id`",
            "scp -t a b",
            "scp /tmp/x",
            "scp -tf /tmp/x",
            "scp -S evil -t x",
            "scp -t 'a'b'",
            "scp -t 'a' 'b'",
            "scp -t 'a'\n'b'",
            "scp -t ~root/x\nid",
            "scp  -t x|id",
            "sh -c 'scp -t x'",
            "scp -t *",
            "scp -f /srv/pub/../../etc/shadow",
            "scp -t '../x'",
            "scp -t ..",
        ] {
            assert_eq!(legacy_scp_path(not_scp), None, "{not_scp:?}");
        }
    }

    #[test]
    fn exec_facts_carry_the_command_and_scp_its_path() {
        let base = RequestFacts::default();
        let exec = ChannelRequest::Exec("uname -a".into()).classify().unwrap();
        assert_eq!(exec.action, EXEC);
        assert_eq!(
            exec.facts(&base).extra,
            vec![(COMMAND, ContextValue::Str("uname -a".into()))]
        );
        let scp = ChannelRequest::Exec("scp -t /srv".into())
            .classify()
            .unwrap();
        assert_eq!(scp.action, SFTP);
        assert!(scp
            .facts(&base)
            .extra
            .contains(&(PATH, ContextValue::Str("/srv".into()))));
        assert!(ChannelRequest::Subsystem("netconf".into())
            .classify()
            .is_err());
    }
}
