//! What policies can speak about: entity types, actions and request
//! context, declared by the core and by each protocol, and the one place
//! the Cedar schema is generated from them.
//!
//! The core declares what every protocol shares: users in groups,
//! connections, the gateway itself, `connect` and the admin actions, and
//! the context every request carries. A protocol adds its own (SQL adds
//! tables, columns, functions and `select` … `unmask`; SSH adds
//! `ssh_shell` … `ssh_agent`) as a [`Vocabulary`] value in its own crate,
//! and the binary hands all of them to the policy engine. A new protocol
//! never edits this file.

use std::fmt::Write as _;

/// An entity type, with the types its entities may lie in.
#[derive(Debug, Clone, Copy)]
pub struct EntitySpec {
    /// The Cedar type name (`Table`).
    pub name: &'static str,
    /// Types an entity of this type may be a member of (`Connection`).
    pub within: &'static [&'static str],
}

/// Actions that share their resource types, optionally in a group.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// The Cedar action ids (`select`, `copy_out`).
    pub names: &'static [&'static str],
    /// The action group they are in (`read`), if any.
    pub group: Option<&'static str>,
    /// The entity types they apply to.
    pub resources: &'static [&'static str],
}

/// An optional attribute of the request context.
#[derive(Debug, Clone, Copy)]
pub struct ContextSpec {
    /// The attribute (`statement_kind`).
    pub name: &'static str,
    /// Its Cedar type (`String`, `Long`).
    pub cedar_type: &'static str,
    /// What it holds, for the schema's comments.
    pub doc: &'static str,
    /// Whether it differs from one request to the next for the same
    /// action and resource (a statement's exact text does; its kind does
    /// not): a decision by a policy that reads it cannot be reused.
    pub per_request: bool,
}

/// What one protocol (or the core) adds to the policy language.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    /// Who declares it (`core`, `postgres`, `ssh`).
    pub owner: &'static str,
    /// Entity types.
    pub entities: &'static [EntitySpec],
    /// Action groups (`read`, `write`).
    pub groups: &'static [&'static str],
    /// Actions.
    pub actions: &'static [ActionSpec],
    /// Optional context attributes.
    pub context: &'static [ContextSpec],
}

/// What every protocol shares.
pub const CORE: Vocabulary = Vocabulary {
    owner: "core",
    entities: &[
        EntitySpec {
            name: "Group",
            within: &[],
        },
        EntitySpec {
            name: "User",
            within: &["Group"],
        },
        EntitySpec {
            name: "Connection",
            within: &[],
        },
        // The gateway itself, for its admin API.
        EntitySpec {
            name: "Gateway",
            within: &[],
        },
    ],
    groups: &[],
    actions: &[
        ActionSpec {
            names: &["connect"],
            group: None,
            resources: &["Connection"],
        },
        ActionSpec {
            names: &["view_sessions", "manage_sessions", "view_configuration"],
            group: None,
            resources: &["Gateway"],
        },
        // Asking for a role for a while (`portcullis request`); the
        // permit's @review names who approves.
        ActionSpec {
            names: &["request_grant"],
            group: None,
            resources: &["Connection"],
        },
    ],
    context: &[
        ContextSpec {
            name: "actor",
            cedar_type: "String",
            doc: "The agent acting for the principal, when there is one.",
            per_request: false,
        },
        ContextSpec {
            name: "role",
            cedar_type: "String",
            doc: "request_grant: the role asked for.",
            // Only grant requests carry it, and they are never cached.
            per_request: false,
        },
        ContextSpec {
            name: "duration_secs",
            cedar_type: "Long",
            doc: "request_grant: how long it is asked for, in seconds.",
            per_request: false,
        },
    ],
};

/// The Cedar schema for the core's vocabulary and `protocols`', in that
/// order. Duplicate declarations (two SQL protocols sharing one
/// vocabulary) are written once.
pub fn cedar_schema(protocols: &[&Vocabulary]) -> String {
    let all: Vec<&Vocabulary> = std::iter::once(&CORE)
        .chain(protocols.iter().copied())
        .collect();
    let mut out = String::from(
        "// The Cedar schema every Portcullis policy set is validated against,\n\
         // generated from the vocabularies of the core and each protocol\n\
         // (crates/core/src/vocabulary.rs). Principals are users in groups;\n\
         // resources are connections and the objects inside them, with ids\n\
         // that carry the connection name: Table::\"app-db/public.users\".\n\n",
    );
    // Each kind of name is deduplicated on its own: an attribute may share
    // a name with an action.
    let first_time = |seen: &mut Vec<&'static str>, name: &'static str| {
        let new = !seen.contains(&name);
        seen.push(name);
        new
    };
    let (mut entities, mut attributes, mut groups, mut actions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &all {
        for e in v.entities {
            if !first_time(&mut entities, e.name) {
                continue;
            }
            if e.within.is_empty() {
                let _ = writeln!(out, "entity {};", e.name);
            } else {
                let _ = writeln!(out, "entity {} in [{}];", e.name, e.within.join(", "));
            }
        }
    }
    out.push_str("\ntype RequestContext = {\n");
    out.push_str("  // The protocol: \"postgres\", \"ssh\", …, or \"api\".\n  protocol: String,\n");
    out.push_str("  // The client's address as the gateway saw it.\n  client_address: String,\n");
    out.push_str(
        "  // Roles granted to the principal on the request's connection now\n  \
         // (approved grants, `portcullis request`); empty when none.\n  grants: Set<String>,\n",
    );
    for v in &all {
        for c in v.context {
            if !first_time(&mut attributes, c.name) {
                continue;
            }
            let _ = writeln!(out, "  // {}\n  {}?: {},", c.doc, c.name, c.cedar_type);
        }
    }
    out.push_str(
        "  // When the request is decided: seconds since the Unix epoch, and the UTC\n  \
         // hour (0-23) and weekday (0 = Monday … 6 = Sunday), for time windows.\n  \
         time: Long,\n  hour: Long,\n  weekday: Long,\n};\n\n",
    );
    for v in &all {
        for g in v.groups {
            if first_time(&mut groups, g) {
                let _ = writeln!(out, "action {g};");
            }
        }
    }
    for v in &all {
        let _ = writeln!(out, "\n// {}", v.owner);
        for a in v.actions {
            let names: Vec<&str> = a
                .names
                .iter()
                .copied()
                .filter(|n| first_time(&mut actions, n))
                .collect();
            if names.is_empty() {
                continue;
            }
            let group = a.group.map(|g| format!(" in [{g}]")).unwrap_or_default();
            let resources = if a.resources.len() == 1 {
                a.resources[0].to_owned()
            } else {
                format!("[{}]", a.resources.join(", "))
            };
            let _ = writeln!(
                out,
                "action {}{group} appliesTo {{\n  principal: User, resource: {resources}, context: RequestContext\n}};",
                names.join(", ")
            );
        }
    }
    out
}

/// Whether `action` is declared by the core or one of `protocols`.
pub fn declares(protocols: &[&Vocabulary], action: &str) -> bool {
    std::iter::once(&CORE)
        .chain(protocols.iter().copied())
        .any(|v| v.actions.iter().any(|a| a.names.contains(&action)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: Vocabulary = Vocabulary {
        owner: "lines",
        entities: &[],
        groups: &["talk"],
        actions: &[ActionSpec {
            names: &["say"],
            group: Some("talk"),
            resources: &["Connection"],
        }],
        context: &[ContextSpec {
            name: "line",
            cedar_type: "String",
            doc: "The line said.",
            per_request: true,
        }],
    };

    #[test]
    fn the_schema_holds_the_core_and_each_protocol_once() {
        let schema = cedar_schema(&[&LINES, &LINES]);
        assert_eq!(schema.matches("action say in [talk]").count(), 1);
        assert_eq!(schema.matches("line?: String").count(), 1);
        assert!(schema.contains("action connect appliesTo"));
        assert!(schema.contains("entity User in [Group];"));
        let (_schema, _warnings) =
            cedar_policy::Schema::from_cedarschema_str(&schema).expect("a valid schema");
        assert!(declares(&[&LINES], "say"));
        assert!(declares(&[], "connect"));
        assert!(!declares(&[], "say"));
    }
}
