//! `portcullis`: the access gateway (`serve`) and its client and admin commands.

mod api;
mod audit;
mod client;
mod config;
mod connect;
mod console;
mod credentials;
mod login;
mod masking_key;
mod protocols;
mod replay;
mod replay_cast;
mod reviews;
mod serve;
mod sinks;
mod ssh_client;
mod webhooks;
mod whatif;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

/// Portcullis: an access gateway that decides, masks and records every command.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Verify the evidence chain in data_dir.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Inspect recorded sessions through a gateway's API.
    Sessions {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Print a recorded session as it happened: timing, statements,
    /// decisions, rows and masked counts.
    Replay {
        #[command(flatten)]
        api: ApiArgs,
        /// The session id.
        session: String,
        /// Play the pauses between statements at this speed (1: as they
        /// happened); without it, print at once.
        #[arg(long)]
        speed: Option<f64>,
        /// Keep printing a live session's statements until it ends.
        #[arg(long)]
        follow: bool,
        /// Play SSH terminal recordings with the server's control
        /// sequences unescaped, as a terminal player would (only for
        /// recordings you trust).
        #[arg(long)]
        raw: bool,
    },
    /// Decide statements held for review, through a gateway's API.
    Reviews {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: reviews::ReviewsCommand,
    },
    /// Ask for a role on a connection for a while; reviewers approve it.
    Request {
        #[command(flatten)]
        api: ApiArgs,
        /// The connection, e.g. app-db.
        #[arg(long)]
        connection: String,
        /// The role, e.g. dba.
        #[arg(long)]
        role: String,
        /// How long, from the approval: 30m, 2h.
        #[arg(long = "for")]
        duration: String,
        /// Why (a ticket, say).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List and revoke grants, through a gateway's API.
    Grants {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: reviews::GrantsCommand,
    },
    /// Work with Cedar policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the SHA-256 of a token read from standard input, for `token_sha256`.
    HashToken,
    /// Log in through the gateway's identity provider and keep a gateway token.
    Login {
        /// The gateway's API URL.
        #[arg(
            long,
            env = "PORTCULLIS_GATEWAY",
            default_value = "http://127.0.0.1:8099"
        )]
        gateway: String,
        /// Use the device authorization grant (for machines without a browser).
        #[arg(long)]
        device: bool,
        /// Print the login URL without trying to open a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Print the current gateway token (renewing it if needed), e.g. for PGPASSWORD.
    Token,
    /// SSH to a connection with a short-lived certificate from the
    /// gateway (no password): `portcullis ssh web-1 [-- command …]`.
    Ssh {
        /// The connection, e.g. web-1.
        connection: String,
        /// The gateway's API URL (the stored login's otherwise).
        #[arg(long, env = "PORTCULLIS_API")]
        api: Option<String>,
        /// A token (the stored login's otherwise).
        #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Passed on to ssh: a command, or options such as -L.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Open a local port that logs in to a connection for you.
    Connect {
        /// The connection name, e.g. app-db.
        connection: String,
        /// Local port (default: any free port, printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The gateway's PostgreSQL host:port, if not the one given at login.
        #[arg(long)]
        gateway_postgres: Option<String>,
        /// CA certificate to verify the gateway with (TLS is then required).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// End a user's (or agent's) live sessions and refuse their tokens.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        /// The user or agent.
        #[arg(long)]
        user: String,
        /// Lift an earlier revocation instead.
        #[arg(long)]
        lift: bool,
    },
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The gateway's API address.
    #[arg(
        long,
        env = "PORTCULLIS_API",
        default_value = "http://127.0.0.1:8099",
        global = true
    )]
    api: String,
    /// A token allowed to use the API.
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// CA certificate (PEM) to verify an `https://` API with, such as the
    /// gateway's generated `data_dir/tls/ca.pem`; the system roots
    /// otherwise.
    #[arg(long = "api-ca", env = "PORTCULLIS_API_CA", global = true)]
    api_ca: Option<std::path::PathBuf>,
    /// Print raw JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List sessions, newest first.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Only on this connection.
        #[arg(long)]
        connection: Option<String>,
        /// Only sessions still open.
        #[arg(long)]
        active: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one session and its statements.
    Show {
        /// The session id.
        id: String,
    },
    /// Export statements as JSON lines or CSV, one per statement.
    Export {
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this connection.
        #[arg(long)]
        connection: Option<String>,
        /// Only sessions started at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only sessions started before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only statements that were allowed (`allow`) or denied (`deny`).
        #[arg(long)]
        decision: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check the policies against the schema.
    Validate {
        /// Take the policy directory from this config file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Or validate this directory directly.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Decide a statement without a gateway: the decision, each (action,
    /// object) pair and the policies that determined it.
    Check {
        /// Take the policy directory from this config file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Or read policies from this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The user to decide for.
        #[arg(long)]
        user: String,
        /// The user's groups (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The connection the statement runs on.
        #[arg(long)]
        connection: String,
        /// The session's search_path, for unqualified names.
        #[arg(long, value_delimiter = ',', default_value = "public")]
        search_path: Vec<String>,
        /// The statement.
        sql: String,
    },
    /// Print the Cedar schema policies are validated against.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => run_serve(config),
        Command::Audit { command } => match audit::run(command) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Sessions { api, command } => {
            runtime().and_then(|rt| rt.block_on(sessions(api, command)))
        }
        Command::Replay {
            api,
            session,
            speed,
            follow,
            raw,
        } => runtime().and_then(|rt| {
            rt.block_on(async {
                let client = client::ApiClient::new(&api.api, api.token, api.api_ca.as_deref())?;
                let pace = replay::Pace { speed, follow, raw };
                replay::replay(&client, &session, pace).await
            })
        }),
        Command::Reviews { api, command } => runtime().and_then(|rt| {
            rt.block_on(async {
                let client = client::ApiClient::new(&api.api, api.token, api.api_ca.as_deref())?;
                reviews::run(client, command, api.json).await
            })
        }),
        Command::Request {
            api,
            connection,
            role,
            duration,
            reason,
        } => runtime().and_then(|rt| {
            rt.block_on(async {
                let client = client::ApiClient::new(&api.api, api.token, api.api_ca.as_deref())?;
                let ask = reviews::GrantAsk {
                    connection,
                    role,
                    duration,
                    reason,
                };
                reviews::request(client, ask, api.json).await
            })
        }),
        Command::Grants { api, command } => runtime().and_then(|rt| {
            rt.block_on(async {
                let client = client::ApiClient::new(&api.api, api.token, api.api_ca.as_deref())?;
                reviews::grants(client, command, api.json).await
            })
        }),
        Command::Policy { command } => policy(command),
        Command::HashToken => hash_token(),
        Command::Login {
            gateway,
            device,
            no_browser,
        } => runtime().and_then(|rt| {
            rt.block_on(login::login(login::LoginArgs {
                gateway,
                device,
                no_browser,
            }))
        }),
        Command::Token => runtime().and_then(|rt| rt.block_on(login::print_token())),
        Command::Ssh {
            connection,
            api,
            token,
            rest,
        } => runtime().and_then(|rt| {
            rt.block_on(ssh_client::run(ssh_client::SshArgs {
                connection,
                api,
                token,
                rest,
            }))
        }),
        Command::Connect {
            connection,
            port,
            gateway_postgres,
            ca,
        } => runtime().and_then(|rt| {
            rt.block_on(connect::connect(connect::ConnectArgs {
                connection,
                port,
                gateway_postgres,
                ca,
            }))
        }),
        Command::Revoke { api, user, lift } => {
            runtime().and_then(|rt| rt.block_on(revoke(api, user, lift)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn revoke(api: ApiArgs, user: String, lift: bool) -> anyhow::Result<()> {
    let client = client::ApiClient::new(&api.api, api.token, api.api_ca.as_deref())?;
    let r = client
        .post(
            "/api/revoke",
            &serde_json::json!({ "user": user, "lift": lift }),
        )
        .await?;
    if api.json {
        println!("{r}");
    } else if lift {
        println!("revocation of {user} lifted");
    } else {
        println!(
            "revoked {user}: {} live session(s) ended; tokens issued until now are refused",
            r.get("sessions_ended")
                .and_then(|n| n.as_u64())
                .unwrap_or(0)
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run_serve(path: PathBuf) -> anyhow::Result<()> {
    let config = config::Config::load(&path)?;
    init_logging(config.log_json, &config.log_level)?;
    runtime()?.block_on(serve::serve(config, path))
}

fn init_logging(json: bool, level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .context("invalid log level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // JSON escapes control characters itself.
        builder.json().init();
    } else {
        builder.fmt_fields(escaped_fields()).init();
    }
    Ok(())
}

/// Text log fields with control characters escaped: many come from
/// clients (database and user names, application names, errors quoting
/// them), and a newline in one would forge a whole log line.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// `text` with every control character written as its Rust escape
/// (`\n`, `\u{1b}`).
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

async fn sessions(args: ApiArgs, command: SessionsCommand) -> anyhow::Result<()> {
    let api = client::ApiClient::new(&args.api, args.token, args.api_ca.as_deref())?;
    if let SessionsCommand::Export {
        format,
        user,
        connection,
        since,
        until,
        decision,
    } = command
    {
        let mut query = Vec::new();
        for (key, value) in [
            ("user", user),
            ("connection", connection),
            ("since", since),
            ("until", until),
        ] {
            if let Some(v) = value {
                query.push((key, v));
            }
        }
        let filter = replay::ExportFilter {
            format,
            query,
            decision,
        };
        return replay::export(&api, filter).await;
    }
    let value = match &command {
        SessionsCommand::List {
            user,
            connection,
            active,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(u) = user {
                q.push(("user", u.clone()));
            }
            if let Some(c) = connection {
                q.push(("connection", c.clone()));
            }
            if *active {
                q.push(("active", "true".into()));
            }
            api.sessions(&q).await?
        }
        SessionsCommand::Show { id } => api.session(id).await?,
        SessionsCommand::Export { .. } => return Ok(()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match command {
        SessionsCommand::List { .. } => client::print_sessions(value),
        SessionsCommand::Show { .. } | SessionsCommand::Export { .. } => {
            client::print_session(value)
        }
    }
}

fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Validate { config, dir } => {
            let dir = match dir {
                Some(d) => d,
                None => config::Config::policy_dir(&config)?,
            };
            let engine = portcullis_core::PolicyEngine::from_dir(&dir, protocols::VOCABULARIES)?;
            println!(
                "{}: {} policies valid",
                dir.display(),
                engine.policy_count()
            );
            Ok(())
        }
        PolicyCommand::Check {
            config,
            dir,
            user,
            groups,
            connection,
            search_path,
            sql,
        } => policy_check(config, dir, user, groups, connection, search_path, &sql),
        PolicyCommand::Schema => {
            print!(
                "{}",
                portcullis_core::vocabulary::cedar_schema(protocols::VOCABULARIES)
            );
            Ok(())
        }
    }
}

fn policy_check(
    config: PathBuf,
    dir: Option<PathBuf>,
    user: String,
    groups: Vec<String>,
    connection: String,
    search_path: Vec<String>,
    sql: &str,
) -> anyhow::Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => config::Config::policy_dir(&config)?,
    };
    let engine = std::sync::Arc::new(portcullis_core::PolicyEngine::from_dir(
        &dir,
        protocols::VOCABULARIES,
    )?);
    let identity = portcullis_core::Identity {
        user,
        groups,
        actor: None,
        method: "policy-check",
        credential: Default::default(),
    };
    print!(
        "{}",
        whatif::what_if(engine, identity, &connection, search_path, sql).text()
    );
    Ok(())
}

fn hash_token() -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token)?;
    let token = token.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!token.is_empty(), "no token on standard input");
    println!("{}", hex::encode(Sha256::digest(token.as_bytes())));
    Ok(())
}
