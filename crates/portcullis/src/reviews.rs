//! `portcullis reviews list|show|approve|deny`: reviews through a
//! gateway's API.

use anyhow::Context;
use clap::Subcommand;
use portcullis_core::approvals::Review;

use crate::client::ApiClient;

/// What to do with reviews.
#[derive(Subcommand)]
pub enum ReviewsCommand {
    /// Open reviews (pending and approved), or every recent one with --all.
    List {
        /// Ended ones too (denied, expired, withdrawn, used).
        #[arg(long)]
        all: bool,
        /// At most this many (with --all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One review: the exact statement, who asked, who decided.
    Show {
        /// The review number.
        id: u64,
    },
    /// Approve a review (not one of your own requests).
    Approve {
        /// The review number.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a review; the held statement fails with your reason.
    Deny {
        /// The review number.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `command` against `api`; prints JSON with `json`.
pub async fn run(api: ApiClient, command: ReviewsCommand, json: bool) -> anyhow::Result<()> {
    let value = match &command {
        ReviewsCommand::List { all, limit } => {
            let status = if *all { "all" } else { "open" };
            api.get_json(
                "/api/reviews",
                &[("status", status.into()), ("limit", limit.to_string())],
            )
            .await?
        }
        ReviewsCommand::Show { id } => api.get_json(&format!("/api/reviews/{id}"), &[]).await?,
        ReviewsCommand::Approve { id, reason } | ReviewsCommand::Deny { id, reason } => {
            let verb = if matches!(command, ReviewsCommand::Approve { .. }) {
                "approve"
            } else {
                "deny"
            };
            api.post(
                &format!("/api/reviews/{id}/{verb}"),
                &serde_json::json!({ "reason": reason }),
            )
            .await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match command {
        ReviewsCommand::List { .. } => {
            let list: Vec<Review> =
                serde_json::from_value(value).context("unexpected review list")?;
            println!(
                "{:>5}  {:<9}  {:<20}  {:<12}  {:<20}  STATEMENT",
                "ID", "STATUS", "REQUESTER", "CONNECTION", "REVIEWERS"
            );
            for r in list {
                println!(
                    "{:>5}  {:<9}  {:<20}  {:<12}  {:<20}  {}",
                    r.id,
                    r.status.as_str(),
                    requester(&r),
                    r.connection,
                    r.reviewers(),
                    one_line(&r.statement, 60)
                );
            }
        }
        _ => {
            let r: Review = serde_json::from_value(value).context("unexpected review")?;
            print_review(&r);
        }
    }
    Ok(())
}

fn requester(r: &Review) -> String {
    match &r.actor {
        Some(a) => format!("{a} for {}", r.requester),
        None => r.requester.clone(),
    }
}

/// `text` on one line, control characters escaped, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

fn when(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn print_review(r: &Review) {
    println!("review      {} ({})", r.id, r.status.as_str());
    println!("requester   {}", requester(r));
    println!("connection  {} via {}", r.connection, r.protocol);
    println!(
        "needs       {} (policy {})",
        r.reviewers(),
        r.policies.join(", ")
    );
    println!("for         {}", r.action);
    println!("reason      {}", r.reason.as_deref().unwrap_or("-"));
    println!(
        "asked       {}; expires {}",
        when(r.created_at),
        when(r.expires_at)
    );
    if let (Some(at), Some(until)) = (r.approved_at, r.approval_expires_at) {
        println!("approved    {}; usable until {}", when(at), when(until));
    }
    if let (Some(at), Some(note)) = (r.ended_at, &r.end_note) {
        println!("ended       {} ({note})", when(at));
    }
    println!("sha256      {}", r.hash);
    // Debug quoting: a statement cannot forge lines of this output.
    println!("statement   {:?}", r.statement);
    if !r.params.is_empty() {
        println!("params      {:?}", r.params);
    }
    for d in &r.decisions {
        println!(
            "{}  {} by {}{}{}",
            when(d.at),
            if d.approve { "approved" } else { "denied" },
            d.by,
            d.actor
                .as_deref()
                .map(|a| format!(" (through {a})"))
                .unwrap_or_default(),
            d.reason
                .as_deref()
                .map(|r| format!(": {r:?}"))
                .unwrap_or_default()
        );
    }
}

/// What to do with grants.
#[derive(Subcommand)]
pub enum GrantsCommand {
    /// Grant requests and grants in force, or every recent one with --all.
    List {
        /// Ended ones too (denied, expired, revoked).
        #[arg(long)]
        all: bool,
    },
    /// End a grant now: its upstream role stops working at once.
    Revoke {
        /// The grant number.
        id: u64,
    },
}

/// What `portcullis request` asks for.
pub struct GrantAsk {
    /// The connection.
    pub connection: String,
    /// The role.
    pub role: String,
    /// For how long (`30m`).
    pub duration: String,
    /// Why.
    pub reason: Option<String>,
}

/// `portcullis request`: asks for a grant and says who approves it.
pub async fn request(api: ApiClient, ask: GrantAsk, json: bool) -> anyhow::Result<()> {
    let value = api
        .post(
            "/api/grants",
            &serde_json::json!({
                "connection": ask.connection,
                "role": ask.role,
                "duration": ask.duration,
                "reason": ask.reason,
            }),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let r: Review = serde_json::from_value(value).context("unexpected grant")?;
    println!(
        "grant {} (role {} on {}) is waiting for approval by {} (portcullis reviews approve {})",
        r.id,
        r.grant.as_ref().map_or("?", |g| g.role.as_str()),
        r.connection,
        r.reviewers(),
        r.id
    );
    Ok(())
}

/// `portcullis grants …`.
pub async fn grants(api: ApiClient, command: GrantsCommand, json: bool) -> anyhow::Result<()> {
    let value = match &command {
        GrantsCommand::List { all } => {
            let status = if *all { "all" } else { "open" };
            api.get_json("/api/grants", &[("status", status.into())])
                .await?
        }
        GrantsCommand::Revoke { id } => {
            api.post(&format!("/api/grants/{id}/revoke"), &serde_json::json!({}))
                .await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match command {
        GrantsCommand::List { .. } => {
            let list: Vec<Review> =
                serde_json::from_value(value).context("unexpected grant list")?;
            println!(
                "{:>5}  {:<9}  {:<20}  {:<12}  {:<12}  UNTIL",
                "ID", "STATUS", "GRANTEE", "CONNECTION", "ROLE"
            );
            for r in list {
                println!(
                    "{:>5}  {:<9}  {:<20}  {:<12}  {:<12}  {}",
                    r.id,
                    grant_status(&r),
                    requester(&r),
                    r.connection,
                    r.grant.as_ref().map_or("?", |g| g.role.as_str()),
                    r.approval_expires_at
                        .map(when)
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        GrantsCommand::Revoke { id } => println!("grant {id} revoked"),
    }
    Ok(())
}

/// A grant's status in its own words: an approved grant is active.
fn grant_status(r: &Review) -> &'static str {
    match r.status {
        portcullis_core::approvals::ReviewStatus::Approved => "active",
        other => other.as_str(),
    }
}
