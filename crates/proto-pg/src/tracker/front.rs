//! The client side: prepared statements and portals as the client defined
//! them, every statement decided through the gate, and each message turned
//! into a [`Forward`] (a permit, or a stand-in) and the [`Pending`] entries
//! the server will answer.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_pg_decide::{
    Allowed, Denied, Forward, GateDecision, Permit, StandIn, StatementGate,
};
use portcullis_pg_wire::{FrontendMessage, Param, Target};

use super::{Pending, Stmt};
use crate::error::SessionError;

/// Texts remembered under one statement name before further reuse is refused.
const MAX_TEXTS_PER_NAME: usize = 16;
/// Longest parameter value kept in the record; longer ones are cut.
pub(super) const PARAM_RECORD_LIMIT: usize = 1024;

struct Portal {
    text: Arc<str>,
    statement: Arc<str>,
    params: Arc<Vec<Option<String>>>,
    allowed: Allowed,
}

#[derive(Clone)]
struct Prepared {
    text: Arc<str>,
    allowed: Allowed,
    /// Earlier texts parsed under the same name: the server rejects a
    /// second Parse of a taken name, but the gateway cannot see whether the
    /// first one succeeded, so it keeps deciding for all of them.
    older: Vec<Arc<str>>,
    /// The gate generation the decision was made under.
    generation: (u64, u64),
}

/// Prepared statements and portals as the client defined them.
pub struct FrontendTracker {
    statements: HashMap<Arc<str>, Prepared>,
    portals: HashMap<Arc<str>, Portal>,
    max_statements: usize,
}

impl FrontendTracker {
    /// A tracker allowing at most `max_statements` named prepared statements.
    pub fn new(max_statements: usize) -> Self {
        Self {
            statements: HashMap::new(),
            portals: HashMap::new(),
            max_statements,
        }
    }

    /// Notes a client message, decides statements through `gate`, and
    /// appends what the server will answer to `out`. What it returns is the
    /// only leave to send the message upstream.
    pub fn on_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        match msg {
            FrontendMessage::Query { sql } => {
                let decision = gate.check(sql);
                out.push(Pending::Query(Stmt::decided(
                    "query",
                    Arc::from(*sql),
                    &decision,
                )));
                Ok(match decision {
                    GateDecision::Allow(a) => Forward::AsIs(a.permit()),
                    GateDecision::Deny(d) => Forward::Instead(StandIn::denied_query(&d)),
                })
            }
            FrontendMessage::Parse { name, sql, .. } => self.on_parse(name, sql, out, gate),
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                ..
            } => {
                let (name, text, decision) = self.bind_decision(statement, gate);
                let rendered = Arc::new(render_params(param_formats, params));
                let mut s = Stmt::decided("bind", text.clone(), &decision);
                s.prepared_name = Some(name.clone());
                s.params = Some(rendered.clone());
                out.push(Pending::Bind(s));
                Ok(match decision {
                    GateDecision::Allow(allowed) => {
                        let permit = allowed.permit();
                        self.portals.insert(
                            Arc::from(*portal),
                            Portal {
                                text,
                                statement: name,
                                params: rendered,
                                allowed,
                            },
                        );
                        Forward::AsIs(permit)
                    }
                    GateDecision::Deny(d) => {
                        self.portals.remove(*portal);
                        Forward::Instead(StandIn::denied_bind(&d, portal))
                    }
                })
            }
            FrontendMessage::Execute { portal, max_rows } => {
                let (s, allowed) = match self.portals.get(*portal) {
                    Some(p) => {
                        let mut s = Stmt::allowed("execute", p.text.clone(), &p.allowed);
                        s.prepared_name = Some(p.statement.clone());
                        s.params = Some(p.params.clone());
                        (s, p.allowed.clone())
                    }
                    // A portal the tracker never bound (a DECLAREd cursor's
                    // name): its query was decided as its own statement.
                    None => {
                        let allowed = gate.check_unbound_portal();
                        (Stmt::allowed("execute", Arc::from(""), &allowed), allowed)
                    }
                };
                let forward = if allowed.mask().is_some() {
                    // Rows of an Execute carry no description; ask for the
                    // portal's (with its result formats) right before it.
                    out.push(Pending::MaskDescribe);
                    Forward::Instead(StandIn::described_execute(
                        allowed.permit(),
                        portal,
                        *max_rows,
                    ))
                } else {
                    Forward::AsIs(allowed.permit())
                };
                out.push(Pending::Execute(s));
                Ok(forward)
            }
            FrontendMessage::Describe { .. } => {
                out.push(Pending::Describe);
                inert(msg)
            }
            FrontendMessage::Close { target, name } => {
                match target {
                    Target::Statement => {
                        self.statements.remove(*name);
                    }
                    Target::Portal => {
                        self.portals.remove(*name);
                    }
                }
                out.push(Pending::Close);
                inert(msg)
            }
            FrontendMessage::Sync => {
                // The unnamed portal does not survive the transaction's end;
                // forgetting it here is harmless and bounds the map.
                self.portals.remove("");
                out.push(Pending::Sync);
                inert(msg)
            }
            FrontendMessage::Flush
            | FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. }
            | FrontendMessage::Terminate => inert(msg),
            FrontendMessage::FunctionCall { oid } => Err(SessionError::not_allowed(format!(
                "fast-path function calls (function {oid}) bypass statement policy and are not allowed"
            ))),
            FrontendMessage::Password(_) => Err(SessionError::not_allowed(
                "unexpected password message after login".into(),
            )),
        }
    }

    fn on_parse(
        &mut self,
        name: &str,
        sql: &str,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        if !name.is_empty()
            && !self.statements.contains_key(name)
            && self.statements.len() >= self.max_statements
        {
            return Err(SessionError::not_allowed(format!(
                "too many prepared statements (limit {})",
                self.max_statements
            )));
        }
        let text: Arc<str> = Arc::from(sql);
        let key: Arc<str> = Arc::from(name);
        let older: Vec<Arc<str>> = match self.statements.get(name).filter(|_| !name.is_empty()) {
            Some(p) => p.older.iter().cloned().chain([p.text.clone()]).collect(),
            None => Vec::new(),
        };
        let decision = if older.len() >= MAX_TEXTS_PER_NAME {
            GateDecision::Deny(Denied::new(
                format!("portcullis: statement denied: prepared statement name \"{name}\" reused too often"),
                Default::default(),
            ))
        } else {
            gate.check(sql)
        };
        let mut s = Stmt::decided("parse", text.clone(), &decision);
        s.prepared_name = Some(key.clone());
        out.push(Pending::Parse(s));
        Ok(match decision {
            GateDecision::Allow(allowed) => {
                let permit = allowed.permit();
                self.statements.insert(
                    key,
                    Prepared {
                        text,
                        allowed,
                        older,
                        generation: gate.generation(),
                    },
                );
                Forward::AsIs(permit)
            }
            // The server never gets the statement, so it can never be
            // bound or executed under this name.
            GateDecision::Deny(d) => Forward::Instead(StandIn::denied_parse(&d, name)),
        })
    }

    /// What a Bind of `statement` would run, re-deciding it when the
    /// session or the policies changed since it was decided: PostgreSQL
    /// re-resolves a prepared statement's names when the search_path
    /// changes. A name the tracker never parsed may be a SQL PREPARE; one
    /// the gate cannot place either is refused.
    fn bind_decision(
        &mut self,
        statement: &str,
        gate: &mut StatementGate,
    ) -> (Arc<str>, Arc<str>, GateDecision) {
        let Some((key, prepared)) = self
            .statements
            .get_key_value(statement)
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            let decision = gate.check_unparsed_statement(statement);
            let text = Arc::from(format!("EXECUTE {statement}"));
            return (Arc::from(statement), text, decision);
        };
        if prepared.generation == gate.generation() {
            let text = prepared.text.clone();
            return (key, text, GateDecision::Allow(prepared.allowed));
        }
        let texts: Vec<Arc<str>> = prepared
            .older
            .iter()
            .cloned()
            .chain([prepared.text.clone()])
            .collect();
        let decision = gate.check_texts(texts.iter().map(|t| &**t));
        if let GateDecision::Allow(allowed) = &decision {
            let mut updated = prepared.clone();
            updated.allowed = allowed.clone();
            updated.generation = gate.generation();
            self.statements.insert(key.clone(), updated);
        }
        (key, prepared.text, decision)
    }
}

/// Leave for a message that runs nothing.
fn inert(msg: &FrontendMessage<'_>) -> Result<Forward, SessionError> {
    Permit::for_inert(msg)
        .map(Forward::AsIs)
        .ok_or_else(|| SessionError::not_allowed("a client message arrived undecided".into()))
}

pub(super) fn render_params(formats: &[i16], params: &[Param<'_>]) -> Vec<Option<String>> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let binary = match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i) == Some(&1),
            };
            match p {
                Param::Null => None,
                Param::Value(v) => Some(render_value(v, binary)),
            }
        })
        .collect()
}

fn render_value(v: &[u8], binary: bool) -> String {
    let cut = &v[..v.len().min(PARAM_RECORD_LIMIT)];
    let mut s = match (binary, std::str::from_utf8(cut)) {
        (false, Ok(t)) => t.to_owned(),
        _ => {
            let mut h = String::with_capacity(2 + cut.len() * 2);
            h.push_str("\\x");
            for b in cut {
                h.push_str(&format!("{b:02x}"));
            }
            h
        }
    };
    if v.len() > PARAM_RECORD_LIMIT {
        s.push_str(&format!("…({} bytes)", v.len()));
    }
    s
}
