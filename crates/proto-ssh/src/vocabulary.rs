//! The SSH words of the policy language. The resource is always the
//! `Connection`; these action and context names are the documented
//! contract with policy authors and do not change.

use portcullis_core::vocabulary::{ActionSpec, ContextSpec, Vocabulary};
use portcullis_core::Action;

/// What SSH adds to the core's vocabulary.
pub const SSH: Vocabulary = Vocabulary {
    owner: "ssh",
    entities: &[],
    groups: &[],
    actions: &[ActionSpec {
        names: &[
            "ssh_shell",
            "ssh_exec",
            "ssh_sftp",
            "ssh_forward",
            "ssh_agent",
        ],
        group: None,
        resources: &["Connection"],
    }],
    context: &[
        ContextSpec {
            name: COMMAND,
            cedar_type: "String",
            doc: "The command of an SSH exec (ssh_exec, and ssh_sftp for scp).",
            per_request: true,
        },
        ContextSpec {
            name: PATH,
            cedar_type: "String",
            doc: "The remote path of an scp transfer, when the protocol shows it (ssh_sftp).",
            per_request: true,
        },
        ContextSpec {
            name: HOST,
            cedar_type: "String",
            doc: "The host a forwarded connection goes to, as the client named it (ssh_forward).",
            per_request: true,
        },
        ContextSpec {
            name: PORT,
            cedar_type: "Long",
            doc: "The port a forwarded connection goes to (ssh_forward).",
            per_request: true,
        },
    ],
};

/// `context.command`.
pub const COMMAND: &str = "command";
/// `context.path`.
pub const PATH: &str = "path";
/// `context.host`.
pub const HOST: &str = "host";
/// `context.port`.
pub const PORT: &str = "port";

/// An interactive shell.
pub const SHELL: Action = Action::named("ssh_shell");
/// A command run without a shell session (`ssh host cmd`).
pub const EXEC: Action = Action::named("ssh_exec");
/// The sftp subsystem, and scp.
pub const SFTP: Action = Action::named("ssh_sftp");
/// A local forward (`ssh -L`).
pub const FORWARD: Action = Action::named("ssh_forward");
/// Agent forwarding (`ssh -A`).
pub const AGENT: Action = Action::named("ssh_agent");
