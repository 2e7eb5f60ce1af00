//! The SQL words of the policy language: tables, columns and functions
//! inside a connection, the data and schema actions, and the statement in
//! the request context. These names are the documented contract with
//! policy authors and do not change: `Action::"select"`,
//! `Table::"<connection>/<schema>.<table>"` and the rest.

use portcullis_core::vocabulary::{ActionSpec, ContextSpec, EntitySpec, Vocabulary};
use portcullis_core::{Action, ObjectRef, Resource};
use portcullis_pg_sql::SqlAction;

/// What SQL protocols add to the core's vocabulary.
pub const SQL: Vocabulary = Vocabulary {
    owner: "sql (postgres)",
    entities: &[
        EntitySpec {
            name: TABLE,
            within: &["Connection"],
        },
        EntitySpec {
            name: COLUMN,
            within: &[TABLE],
        },
        EntitySpec {
            name: FUNCTION,
            within: &["Connection"],
        },
    ],
    groups: &["read", "write"],
    actions: &[
        ActionSpec {
            names: &["select", "copy_out"],
            group: Some("read"),
            resources: &["Connection", TABLE, COLUMN],
        },
        ActionSpec {
            names: &["insert", "update", "delete", "merge", "truncate", "copy_in"],
            group: Some("write"),
            resources: &["Connection", TABLE, COLUMN],
        },
        ActionSpec {
            names: &["ddl", "admin"],
            group: None,
            resources: &["Connection", TABLE, FUNCTION],
        },
        ActionSpec {
            names: &["execute"],
            group: None,
            resources: &["Connection", FUNCTION],
        },
        ActionSpec {
            names: &["unmask"],
            group: None,
            resources: &["Connection", TABLE, COLUMN],
        },
    ],
    context: &[
        ContextSpec {
            name: STATEMENT_KIND,
            cedar_type: "String",
            doc: "The kind of statement (\"select\", \"insert\", …) when a statement is decided.",
            per_request: false,
        },
        ContextSpec {
            name: STATEMENT,
            cedar_type: "String",
            doc: "The statement text when a statement is decided.",
            per_request: true,
        },
    ],
};

/// The protocol's name in records and in `context.protocol`.
pub const PROTOCOL: &str = "postgres";

/// The Cedar type of tables (and views, sequences: every relation).
pub const TABLE: &str = "Table";
/// The Cedar type of columns.
pub const COLUMN: &str = "Column";
/// The Cedar type of functions and procedures.
pub const FUNCTION: &str = "Function";
/// The context attribute holding the statement's kind.
pub const STATEMENT_KIND: &str = "statement_kind";
/// The context attribute holding the statement's text.
pub const STATEMENT: &str = "statement";

/// See a masked column in clear.
pub const UNMASK: Action = Action::named("unmask");

/// The Cedar action of a statement's access (its id is
/// [`SqlAction::as_str`], declared in [`SQL`]).
pub fn action(a: SqlAction) -> Action {
    Action::named(a.as_str())
}

/// Whether `action` reads or writes rows, and so reaches through a view
/// to what lies beneath it.
pub fn is_data_action(action: Action) -> bool {
    matches!(
        action.as_str(),
        "select" | "copy_out" | "insert" | "update" | "delete" | "merge" | "copy_in"
    )
}

/// `Table::"<connection>/<schema>.<table>"`.
pub fn table(connection: &str, name: impl Into<String>) -> Resource {
    Resource::object(TABLE, connection, name)
}

/// `Function::"<connection>/<schema>.<name>"`.
pub fn function(connection: &str, name: impl Into<String>) -> Resource {
    Resource::object(FUNCTION, connection, name)
}

/// `Column::"<connection>/<schema>.<table>.<column>"`, inside its table.
pub fn column(connection: &str, qualified: &str) -> Resource {
    // `schema.table.column`: the table is everything before the last dot.
    let table = qualified.rsplit_once('.').map_or(qualified, |(t, _)| t);
    Resource::Object(ObjectRef {
        entity: COLUMN,
        connection: connection.to_owned(),
        name: qualified.to_owned(),
        within: Some((TABLE, table.to_owned())),
    })
}

/// The `schema.table` of a table resource.
pub fn table_name(resource: &Resource) -> Option<&str> {
    resource.object_name(TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::vocabulary::{cedar_schema, declares};

    /// The names policy authors write are a contract: every action the
    /// parser can produce is declared, and the schema says what it said
    /// before the vocabulary was generated.
    #[test]
    fn every_statement_action_is_declared_with_its_documented_shape() {
        for a in [
            SqlAction::Select,
            SqlAction::Insert,
            SqlAction::Update,
            SqlAction::Delete,
            SqlAction::Merge,
            SqlAction::Truncate,
            SqlAction::CopyOut,
            SqlAction::CopyIn,
            SqlAction::Ddl,
            SqlAction::Execute,
            SqlAction::Admin,
        ] {
            assert!(declares(&[&SQL], a.as_str()), "{a:?} is not declared");
        }
        let schema = cedar_schema(&[&SQL]);
        for line in [
            "entity Table in [Connection];",
            "entity Column in [Table];",
            "entity Function in [Connection];",
            "action select, copy_out in [read] appliesTo {\n  principal: User, resource: [Connection, Table, Column]",
            "action insert, update, delete, merge, truncate, copy_in in [write] appliesTo {\n  principal: User, resource: [Connection, Table, Column]",
            "action ddl, admin appliesTo {\n  principal: User, resource: [Connection, Table, Function]",
            "action execute appliesTo {\n  principal: User, resource: [Connection, Function]",
            "action unmask appliesTo {\n  principal: User, resource: [Connection, Table, Column]",
            "statement_kind?: String,",
            "statement?: String,",
        ] {
            assert!(schema.contains(line), "the schema lacks {line:?}:\n{schema}");
        }
    }
}
