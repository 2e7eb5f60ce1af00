//! The vocabulary of an analysis: actions, objects, and session effects.

use thiserror::Error;

/// What a statement does to an object. Names match the Cedar actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SqlAction {
    /// Read rows.
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows.
    Delete,
    /// MERGE into a table.
    Merge,
    /// Empty a table.
    Truncate,
    /// COPY … TO (rows leave in bulk).
    CopyOut,
    /// COPY … FROM (rows arrive in bulk).
    CopyIn,
    /// Change the schema.
    Ddl,
    /// Run a function, procedure or anonymous code block.
    Execute,
    /// Roles, grants, server settings and other administration.
    Admin,
}

impl SqlAction {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlAction::Select => "select",
            SqlAction::Insert => "insert",
            SqlAction::Update => "update",
            SqlAction::Delete => "delete",
            SqlAction::Merge => "merge",
            SqlAction::Truncate => "truncate",
            SqlAction::CopyOut => "copy_out",
            SqlAction::CopyIn => "copy_in",
            SqlAction::Ddl => "ddl",
            SqlAction::Execute => "execute",
            SqlAction::Admin => "admin",
        }
    }
}

/// A possibly schema-qualified name, as written in the statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// The schema, when the statement qualified the name.
    pub schema: Option<String>,
    /// The object's own name.
    pub name: String,
}

impl Name {
    /// A name in `schema`, or unqualified.
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self {
            schema: schema.filter(|s| !s.is_empty()).map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What an action is done to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    /// The connection as a whole (DO blocks, administration, COPY of a query).
    Connection,
    /// A table, view or other relation.
    Table(Name),
    /// A function or procedure.
    Function(Name),
}

/// One (action, object) pair a statement implies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    /// What is done.
    pub action: SqlAction,
    /// To what.
    pub object: Object,
}

/// A change to session state the caller must track to keep reading
/// statements the way the server will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `SET search_path`: the new list, or `None` for "back to the default".
    SearchPath(Option<Vec<String>>),
    /// `PREPARE name AS …`: EXECUTE name later does what this does.
    Prepare {
        /// The prepared statement's name.
        name: String,
        /// What it does.
        facts: Box<StatementFacts>,
    },
    /// `DEALLOCATE name`; `None` for `DEALLOCATE ALL` and `DISCARD ALL`.
    Deallocate(Option<String>),
    /// `DECLARE name CURSOR …`: a portal of that name now exists.
    Declare(String),
    /// `CLOSE name`; `None` for `CLOSE ALL` and `DISCARD ALL`.
    ClosePortal(Option<String>),
    /// May change `client_encoding`, in which the server reads the
    /// client's next messages.
    ClientEncoding(EncodingChange),
}

/// How a statement may change `client_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EncodingChange {
    /// Ends a transaction, which undoes its `SET LOCAL`s, and every `SET`
    /// if it failed: a change only where the session set the encoding.
    TransactionEnd,
    /// `RESET ALL`, `DISCARD ALL`: back to the login's encoding, a change
    /// only where the session set another one.
    ResetAll,
    /// Sets or resets `client_encoding` itself.
    Set,
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFacts {
    /// A short kind: `select`, `insert`, `ddl`, `transaction`, `set`, …
    pub kind: &'static str,
    /// Every (action, object) pair, sorted and without duplicates.
    pub accesses: Vec<Access>,
    /// Session changes.
    pub effects: Vec<Effect>,
    /// `EXECUTE name`: the caller adds what the prepared statement does.
    pub executes: Option<String>,
    /// `FETCH`/`MOVE … name`: the cursor (portal) it reads, which was
    /// decided when it was declared or bound.
    pub fetches: Option<String>,
    /// Whether it calls functions by unqualified name that were let through
    /// as built-ins: only sound while `pg_catalog` is searched first.
    pub unqualified_builtins: bool,
    /// The names of those built-ins, sorted: a user function of the same
    /// name could be chosen instead, so the gateway checks its catalog.
    pub builtin_names: Vec<String>,
    /// Names written as field selections (`t.f`, `(expr).f`), sorted.
    /// PostgreSQL calls the one-argument function `f` when `t` has no
    /// column `f` (or `expr` no field `f`), so the caller, which knows the
    /// catalog's functions, decides each name that is a function's as an
    /// unqualified call to it.
    pub attribute_names: Vec<String>,
    /// Operator symbols used, sorted: `+`, or `schema.+` when qualified
    /// (`OPERATOR(app.+)`). A user's operator runs its function, so the
    /// caller, which knows the catalog's operators, decides each as a call
    /// to the functions behind it.
    pub operator_names: Vec<String>,
    /// Type names cast to explicitly (`x::t`, `CAST(x AS t)`), sorted: a
    /// user's cast to `t` runs its function.
    pub cast_targets: Vec<String>,
    /// Whether what it does depends on literal values that a literal-free
    /// cache key drops: COPY (its file name, even an empty one, and its
    /// options) and ORDER BY / GROUP BY / DISTINCT ON positions (`ORDER BY
    /// 2`). Such texts must be cached by their exact text only.
    pub literal_sensitive: bool,
    /// Whether it creates, renames or moves functions, types or domains:
    /// names a field selection can call change before the caller's catalog
    /// shows them.
    pub redefines_callables: bool,
    /// What its result columns and conditions read, for masking.
    pub outputs: crate::OutputFacts,
}

/// The statements of one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// In order.
    pub statements: Vec<StatementFacts>,
}

/// Why a statement cannot be classified; callers deny it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Unclassifiable {
    /// PostgreSQL's parser rejected it.
    #[error("cannot parse: {0}")]
    Parse(String),
    /// A statement type the gateway does not classify.
    #[error("{0} statements are not supported")]
    Unsupported(String),
    /// A setting that would make the server read statements differently.
    #[error("{0}")]
    Unsafe(String),
}
